/*
 * net.h: the network rules pgvault's libcurl clients share (pgvault.http
 * today; written so that pgvault.s3 can use them too): TLS always
 * verified, a CA bundle when given, http and https only, no redirects;
 * exponential backoff with jitter; Retry-After in both of its forms; which
 * transport failures mean the request never left; an interruptible sleep.
 */
#ifndef PGVAULT_NET_H
#define PGVAULT_NET_H

#include "pgvault.h"

#include <curl/curl.h>
#include <stdbool.h>

/* Sets the options every request of ours has on a fresh (or reset) easy
 * handle: peer and host verification, `ca_bundle` when not NULL or "",
 * http/https only, no redirects, no signals, keepalive, our user agent,
 * and a connect timeout of `connect_timeout` seconds. */
void net_secure(CURL *e, const char *ca_bundle, long connect_timeout);

/* Seconds to wait before attempt `attempt` + 1 (attempt >= 1 failed):
 * base * 2^(attempt-1), at most `cap`, then a random point in its upper
 * half, so that clients that failed together do not retry together. */
double net_backoff(double base, int attempt, double cap);

/* Seconds a Retry-After value asks for: delta-seconds ("120") or an
 * HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT", which counts from now).
 * 0 for a date in the past; -1 when absent or unreadable. */
double net_retry_after(const char *value);

/* The certificate or TLS set-up failed: retrying cannot help. */
bool net_tls_failure(CURLcode rc);
/* A hint to append to a TLS failure's message ("" when none). */
const char *net_tls_hint(CURLcode rc);

/* No byte of the request reached the server (name not resolved, connection
 * refused): safe to send again whatever the method. */
bool net_never_sent(CURLcode rc);

/* Sleeps `seconds`, waking early when a signal arrives; false then. */
bool net_sleep(double seconds);

#endif
