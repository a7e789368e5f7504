/*
 * config.c: S3 settings from the places the aws CLI reads them, in its
 * order: explicit options, then the environment (AWS_ACCESS_KEY_ID ...,
 * AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, AWS_CA_BUNDLE), then the
 * shared files (~/.aws/credentials, ~/.aws/config with [profile NAME]
 * sections and nested "s3 =" blocks). Secrets are registered for
 * redaction as soon as they are read.
 */
#include "s3int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *env_nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static void home_path(char *out, size_t outsz, const char *env, const char *rel)
{
    const char *v = env_nonempty(env);
    if (v) {
        snprintf(out, outsz, "%s", v);
        return;
    }
    const char *home = getenv("HOME");
    snprintf(out, outsz, "%s/%s", home ? home : "", rel);
}

/* Copies src into dst; false when it does not fit. */
static bool copy_setting(char *dst, size_t dstsz, const char *src)
{
    size_t n = strlen(src);
    if (n >= dstsz) return false;
    memcpy(dst, src, n + 1);
    return true;
}

static const char *first(const char *a, const char *b)
{
    return a ? a : b;
}

const char *const s3_setting_names[] = {"endpoint_url",  "region",        "profile",
                                        "ca_bundle",     "access_key_id", "secret_access_key",
                                        "session_token", "max_attempts",  "retry_base_ms",
                                        "timeout",       "clock_skew",    NULL};

/* The options table's settings; empty strings count as absent. */
typedef struct {
    const char *profile, *region, *endpoint, *ca, *key, *secret, *token;
} explicit_opts;

static const char *opt_nonempty(lua_State *L, int idx, const char *name)
{
    const char *v = pv_opt_str(L, idx, name, NULL);
    return v && *v ? v : NULL;
}

static void read_options(lua_State *L, int idx, s3_config *cfg, explicit_opts *o)
{
    o->profile = opt_nonempty(L, idx, "profile");
    o->region = opt_nonempty(L, idx, "region");
    o->endpoint = opt_nonempty(L, idx, "endpoint_url");
    o->ca = opt_nonempty(L, idx, "ca_bundle");
    o->key = pv_opt_str(L, idx, "access_key_id", NULL);
    o->secret = pv_opt_str(L, idx, "secret_access_key", NULL);
    o->token = pv_opt_str(L, idx, "session_token", NULL);
    cfg->max_attempts = (int)pv_opt_int(L, idx, "max_attempts", 6);
    if (cfg->max_attempts < 1) cfg->max_attempts = 1;
    lua_Integer base_ms = pv_opt_int(L, idx, "retry_base_ms", 200);
    cfg->retry_base = (double)(base_ms < 1 ? 1 : base_ms) / 1000.0;
    cfg->timeout = (long)pv_opt_int(L, idx, "timeout", 60);
    cfg->clock_skew = (double)pv_opt_int(L, idx, "clock_skew", 0);
}

/* The profile's sections of the shared files. */
typedef struct {
    char cred_path[1024], conf_path[1024];
    s3_ini_section cred, conf;
} shared_files;

static int read_shared_files(s3_config *cfg, const explicit_opts *o, shared_files *f, pv_err *err)
{
    const char *profile = first(o->profile, env_nonempty("AWS_PROFILE"));
    bool named = profile != NULL;
    if (!profile) profile = "default";
    snprintf(cfg->profile, sizeof cfg->profile, "%s", profile);
    home_path(f->cred_path, sizeof f->cred_path, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    home_path(f->conf_path, sizeof f->conf_path, "AWS_CONFIG_FILE", ".aws/config");
    char section[192];
    s3_ini_read(f->cred_path, profile, &f->cred);
    if (strcmp(profile, "default") == 0)
        snprintf(section, sizeof section, "default");
    else
        snprintf(section, sizeof section, "profile %s", profile);
    s3_ini_read(f->conf_path, section, &f->conf);
    if (named && !f->cred.found && !f->conf.found) {
        pv_err_set(err, "config",
                   "AWS profile '%s' not found in %s or %s; create it (aws configure --profile %s) "
                   "or choose another with --profile",
                   profile, f->cred_path, f->conf_path, profile);
        pv_err_str(err, "profile", profile);
        return -1;
    }
    return 0;
}

/* Keys: options, then the environment unless a profile was asked for
 * explicitly (as the aws CLI does), then the profile's files. */
static int pick_credentials(s3_config *cfg, const explicit_opts *o, const shared_files *f,
                            pv_err *err)
{
    const char *key = NULL, *secret = NULL, *token = NULL;
    if (o->key && o->secret) {
        key = o->key, secret = o->secret, token = o->token;
        snprintf(cfg->cred_source, sizeof cfg->cred_source, "options");
    }
    if (!key && !o->profile && env_nonempty("AWS_ACCESS_KEY_ID") &&
        env_nonempty("AWS_SECRET_ACCESS_KEY")) {
        key = getenv("AWS_ACCESS_KEY_ID");
        secret = getenv("AWS_SECRET_ACCESS_KEY");
        token = env_nonempty("AWS_SESSION_TOKEN");
        snprintf(cfg->cred_source, sizeof cfg->cred_source, "environment");
    }
    const s3_ini_section *srcs[2] = {&f->cred, &f->conf};
    const char *paths[2] = {f->cred_path, f->conf_path};
    for (int i = 0; i < 2 && !key; i++) {
        const char *k = s3_ini_get(srcs[i], "aws_access_key_id");
        const char *s = s3_ini_get(srcs[i], "aws_secret_access_key");
        if (k && s) {
            key = k, secret = s, token = s3_ini_get(srcs[i], "aws_session_token");
            snprintf(cfg->cred_source, sizeof cfg->cred_source, "profile %.40s in %.100s",
                     cfg->profile, paths[i]);
        }
    }
    if (!key) {
        pv_err_set(err, "config",
                   "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                   "add profile '%s' to %s",
                   cfg->profile, f->cred_path);
        pv_err_str(err, "profile", cfg->profile);
        return -1;
    }
    if (!copy_setting(cfg->access_key, sizeof cfg->access_key, key) ||
        !copy_setting(cfg->secret_key, sizeof cfg->secret_key, secret)) {
        pv_err_set(err, "config", "AWS access key id or secret key too long");
        return -1;
    }
    pv_log_add_secret(cfg->secret_key);
    if (token && *token) {
        cfg->session_token = s3_xstrdup(token);
        pv_log_add_secret(cfg->session_token);
    }
    return 0;
}

static int pick_endpoint(s3_config *cfg, const explicit_opts *o, const shared_files *f, pv_err *err)
{
    const s3_ini_section *conf = &f->conf;
    const char *region = first(
        o->region, first(env_nonempty("AWS_REGION"),
                         first(env_nonempty("AWS_DEFAULT_REGION"),
                               first(s3_ini_get(conf, "s3.region"), s3_ini_get(conf, "region")))));
    if (!copy_setting(cfg->region, sizeof cfg->region, region ? region : "us-east-1")) {
        pv_err_set(err, "config", "AWS region name too long");
        return -1;
    }
    const char *endpoint = first(
        o->endpoint,
        first(env_nonempty("AWS_ENDPOINT_URL_S3"),
              first(env_nonempty("AWS_ENDPOINT_URL"),
                    first(s3_ini_get(conf, "s3.endpoint_url"), s3_ini_get(conf, "endpoint_url")))));
    if (endpoint) {
        if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
            pv_err_set(err, "config",
                       "endpoint URL '%s' must start with https:// (or http://), e.g. "
                       "https://s3.us-west-004.backblazeb2.com",
                       endpoint);
            return -1;
        }
        if (!copy_setting(cfg->endpoint, sizeof cfg->endpoint, endpoint)) {
            pv_err_set(err, "config", "endpoint URL too long");
            return -1;
        }
        size_t n = strlen(cfg->endpoint);
        while (n > 0 && cfg->endpoint[n - 1] == '/')
            cfg->endpoint[--n] = '\0';
        cfg->path_style = true;
    } else {
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "https://s3.%s.amazonaws.com", cfg->region);
    }
    const char *style = s3_ini_get(conf, "s3.addressing_style");
    if (style && strcmp(style, "virtual") == 0) cfg->path_style = false;
    if (style && strcmp(style, "path") == 0) cfg->path_style = true;
    const char *ca =
        first(o->ca, first(env_nonempty("AWS_CA_BUNDLE"), s3_ini_get(conf, "ca_bundle")));
    if (ca && !copy_setting(cfg->ca_bundle, sizeof cfg->ca_bundle, ca)) {
        pv_err_set(err, "config", "CA bundle path too long");
        return -1;
    }
    return 0;
}

int s3_config_load(lua_State *L, int idx, s3_config *cfg, pv_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    explicit_opts o;
    read_options(L, idx, cfg, &o);
    shared_files f;
    memset(&f, 0, sizeof f);
    int rc = read_shared_files(cfg, &o, &f, err);
    if (rc == 0) rc = pick_credentials(cfg, &o, &f, err);
    if (rc == 0) rc = pick_endpoint(cfg, &o, &f, err);
    s3_ini_free(&f.cred);
    s3_ini_free(&f.conf);
    return rc;
}

/* Plain HTTP to anything but this machine: said once per process, since
 * the data and the signed requests (access key id included) travel
 * unencrypted. */
static void warn_plain_http(const s3_config *cfg)
{
    static bool said;
    if (said || strncmp(cfg->endpoint, "http://", 7) != 0) return;
    const char *host = cfg->endpoint + 7;
    size_t n = strcspn(host, ":/");
    if (host[0] == '[') n = strcspn(host, "]") + 1;
    if ((n == 9 && strncmp(host, "localhost", 9) == 0) ||
        (n == 5 && strncmp(host, "[::1]", 5) == 0) ||
        (strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == n))
        return;
    said = true;
    pv_log(PV_LOG_WARN,
           "s3: endpoint %s is plain HTTP: backups and signed requests (access key id %s) cross "
           "the network unencrypted; use https://",
           cfg->endpoint, cfg->access_key);
}

s3_settings *s3_settings_load(lua_State *L, int idx, pv_err *err)
{
    /* Loaded on the stack first: reading the options may raise, and only
     * what follows allocates. */
    s3_config cfg;
    if (s3_config_load(L, idx, &cfg, err) < 0) {
        s3_config_free(&cfg);
        return NULL;
    }
    warn_plain_http(&cfg);
    s3_settings *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->refs = 1;
    s->cfg = cfg;
    memset(&cfg, 0, sizeof cfg);
    s3_signer *sg = &s->signer;
    snprintf(sg->access_key, sizeof sg->access_key, "%s", s->cfg.access_key);
    snprintf(sg->secret_key, sizeof sg->secret_key, "%s", s->cfg.secret_key);
    snprintf(sg->region, sizeof sg->region, "%s", s->cfg.region);
    snprintf(sg->service, sizeof sg->service, "s3");
    sg->session_token = s->cfg.session_token;
    return s;
}

s3_settings *s3_settings_ref(s3_settings *s)
{
    s->refs++;
    return s;
}

void s3_settings_unref(s3_settings *s)
{
    if (!s || --s->refs > 0) return;
    s3_config_free(&s->cfg);
    memset(&s->signer, 0, sizeof s->signer);
    free(s);
}

void s3_config_free(s3_config *cfg)
{
    free(cfg->session_token);
    cfg->session_token = NULL;
    memset(cfg->secret_key, 0, sizeof cfg->secret_key);
}

void s3_config_describe(const s3_config *cfg, char *out, size_t outsz)
{
    snprintf(out, outsz, "access key id %s from %s, endpoint %s, region %s, profile %s",
             cfg->access_key, cfg->cred_source, cfg->endpoint, cfg->region, cfg->profile);
}
