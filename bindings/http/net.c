/*
 * net.c: the shared network rules of net.h.
 */
#include "net.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void net_secure(CURL *e, const char *ca_bundle, long connect_timeout)
{
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (ca_bundle && ca_bundle[0]) curl_easy_setopt(e, CURLOPT_CAINFO, ca_bundle);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, connect_timeout > 0 ? connect_timeout : 15L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "pgvault/" PGVAULT_VERSION);
}

static double unit_random(void)
{
    uint32_t r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = (uint32_t)random();
    return (double)r / 4294967296.0;
}

double net_backoff(double base, int attempt, double cap)
{
    double delay = base;
    for (int i = 1; i < attempt && delay < cap; i++)
        delay *= 2;
    if (delay > cap) delay = cap;
    return delay / 2 + unit_random() * delay / 2;
}

double net_retry_after(const char *value)
{
    if (!value) return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (!*value) return -1;
    if (*value >= '0' && *value <= '9') {
        char *end;
        double s = strtod(value, &end);
        while (*end == ' ' || *end == '\t')
            end++;
        return *end || !isfinite(s) ? -1 : s;
    }
    time_t when = curl_getdate(value, NULL);
    if (when == (time_t)-1) return -1;
    double s = difftime(when, time(NULL));
    return s < 0 ? 0 : s;
}

bool net_tls_failure(CURLcode rc)
{
    switch (rc) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return true;
    default:
        return false;
    }
}

const char *net_tls_hint(CURLcode rc)
{
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
        rc == CURLE_SSL_ISSUER_ERROR)
        return "; if the server's certificate comes from a private CA, give its bundle "
               "(ca_bundle / --ca-bundle FILE)";
    return "";
}

bool net_never_sent(CURLcode rc)
{
    /* Resolution and connection failures only: once connected, a timeout
     * or a reset may have come after the server read the request. */
    return rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_RESOLVE_PROXY ||
           rc == CURLE_COULDNT_CONNECT;
}

bool net_sleep(double seconds)
{
    double end = pv_now() + seconds;
    for (;;) {
        if (pv_interrupted()) return false;
        double left = end - pv_now();
        if (left <= 0) return true;
        if (left > 0.05) left = 0.05;
        struct timespec ts = {0, (long)(left * 1e9)};
        nanosleep(&ts, NULL);
    }
}
