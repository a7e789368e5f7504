/*
 * config.c: S3 settings from the places the aws CLI reads them, in its
 * order: explicit options, then the environment (AWS_ACCESS_KEY_ID ...,
 * AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, AWS_CA_BUNDLE), then the
 * shared files (~/.aws/credentials, ~/.aws/config with [profile NAME]
 * sections and nested "s3 =" blocks). Secrets are registered for
 * redaction as soon as they are read.
 */
#include "s3int.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char key[64];
    char value[2048];
} ini_entry;

typedef struct {
    ini_entry *v;
    int n;
    bool found; /* the section exists */
} ini_section;

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Reads section `want` of an INI file; nested "parent =" blocks become
 * "parent.key" entries. A missing file is an empty section. */
static void ini_read(const char *path, const char *want, ini_section *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[4096], parent[64] = "";
    bool in = false;
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        bool indented = line[0] == ' ' || line[0] == '\t';
        char *s = trim(line);
        if (!*s || *s == '#' || *s == ';') continue;
        if (*s == '[') {
            char *end = strchr(s, ']');
            if (end) *end = '\0';
            char *name = trim(s + 1);
            in = strcmp(name, want) == 0;
            if (in) out->found = true;
            parent[0] = '\0';
            continue;
        }
        if (!in) continue;
        char *eq = strchr(s, '=');
        if (!eq) continue;
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        if (!indented) parent[0] = '\0';
        if (!indented && !*v) {
            snprintf(parent, sizeof parent, "%s", k);
            continue;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 16;
            ini_entry *nv = realloc(out->v, (size_t)cap * sizeof *nv);
            if (!nv) abort();
            out->v = nv;
        }
        ini_entry *e = &out->v[out->n++];
        if (indented && parent[0])
            snprintf(e->key, sizeof e->key, "%.30s.%.32s", parent, k);
        else
            snprintf(e->key, sizeof e->key, "%.63s", k);
        snprintf(e->value, sizeof e->value, "%.2047s", v);
    }
    fclose(f);
}

static const char *ini_get(const ini_section *s, const char *key)
{
    for (int i = s->n - 1; i >= 0; i--)
        if (strcmp(s->v[i].key, key) == 0) return s->v[i].value;
    return NULL;
}

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

int s3_config_load(lua_State *L, int idx, s3_config *cfg, pv_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const char *o_profile = pv_opt_str(L, idx, "profile", NULL);
    const char *o_region = pv_opt_str(L, idx, "region", NULL);
    const char *o_endpoint = pv_opt_str(L, idx, "endpoint_url", NULL);
    const char *o_ca = pv_opt_str(L, idx, "ca_bundle", NULL);
    const char *o_key = pv_opt_str(L, idx, "access_key_id", NULL);
    const char *o_secret = pv_opt_str(L, idx, "secret_access_key", NULL);
    const char *o_token = pv_opt_str(L, idx, "session_token", NULL);
    if (o_profile && !*o_profile) o_profile = NULL;
    if (o_region && !*o_region) o_region = NULL;
    if (o_endpoint && !*o_endpoint) o_endpoint = NULL;
    if (o_ca && !*o_ca) o_ca = NULL;
    cfg->max_attempts = (int)pv_opt_int(L, idx, "max_attempts", 6);
    if (cfg->max_attempts < 1) cfg->max_attempts = 1;
    lua_Integer base_ms = pv_opt_int(L, idx, "retry_base_ms", 200);
    cfg->retry_base = (double)(base_ms < 1 ? 1 : base_ms) / 1000.0;
    cfg->timeout = (long)pv_opt_int(L, idx, "timeout", 60);
    cfg->clock_skew = (double)pv_opt_int(L, idx, "clock_skew", 0);

    const char *profile = first(o_profile, env_nonempty("AWS_PROFILE"));
    bool named = profile != NULL;
    if (!profile) profile = "default";
    snprintf(cfg->profile, sizeof cfg->profile, "%s", profile);

    char cred_path[1024], conf_path[1024], section[192];
    home_path(cred_path, sizeof cred_path, "AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    home_path(conf_path, sizeof conf_path, "AWS_CONFIG_FILE", ".aws/config");
    ini_section cred, conf;
    ini_read(cred_path, profile, &cred);
    if (strcmp(profile, "default") == 0)
        snprintf(section, sizeof section, "default");
    else
        snprintf(section, sizeof section, "profile %s", profile);
    ini_read(conf_path, section, &conf);

    int rc = 0;
    if (named && !cred.found && !conf.found) {
        pv_err_set(err, "config",
                   "AWS profile '%s' not found in %s or %s; create it (aws configure --profile %s) "
                   "or choose another with --profile",
                   profile, cred_path, conf_path, profile);
        pv_err_str(err, "profile", profile);
        rc = -1;
        goto out;
    }

    /* Keys: options, then the environment unless a profile was asked for
     * with --profile (as the aws CLI does), then the profile. */
    const char *key = NULL, *secret = NULL, *token = NULL;
    if (o_key && o_secret) {
        key = o_key, secret = o_secret, token = o_token;
        snprintf(cfg->cred_source, sizeof cfg->cred_source, "options");
    }
    if (!key && !o_profile && env_nonempty("AWS_ACCESS_KEY_ID") &&
        env_nonempty("AWS_SECRET_ACCESS_KEY")) {
        key = getenv("AWS_ACCESS_KEY_ID");
        secret = getenv("AWS_SECRET_ACCESS_KEY");
        token = env_nonempty("AWS_SESSION_TOKEN");
        snprintf(cfg->cred_source, sizeof cfg->cred_source, "environment");
    }
    if (!key) {
        const ini_section *srcs[2] = {&cred, &conf};
        const char *paths[2] = {cred_path, conf_path};
        for (int i = 0; i < 2 && !key; i++) {
            const char *k = ini_get(srcs[i], "aws_access_key_id");
            const char *s = ini_get(srcs[i], "aws_secret_access_key");
            if (k && s) {
                key = k, secret = s, token = ini_get(srcs[i], "aws_session_token");
                snprintf(cfg->cred_source, sizeof cfg->cred_source, "profile %s in %.120s", profile,
                         paths[i]);
            }
        }
    }
    if (!key) {
        pv_err_set(err, "config",
                   "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                   "add profile '%s' to %s",
                   profile, cred_path);
        pv_err_str(err, "profile", profile);
        rc = -1;
        goto out;
    }
    if (strlen(key) >= sizeof cfg->access_key || strlen(secret) >= sizeof cfg->secret_key) {
        pv_err_set(err, "config", "AWS access key id or secret key too long");
        rc = -1;
        goto out;
    }
    snprintf(cfg->access_key, sizeof cfg->access_key, "%s", key);
    snprintf(cfg->secret_key, sizeof cfg->secret_key, "%s", secret);
    pv_log_add_secret(cfg->secret_key);
    if (token && *token) {
        cfg->session_token = s3_xstrdup(token);
        pv_log_add_secret(cfg->session_token);
    }

    const char *region =
        first(o_region, first(env_nonempty("AWS_REGION"),
                              first(env_nonempty("AWS_DEFAULT_REGION"),
                                    first(ini_get(&conf, "s3.region"), ini_get(&conf, "region")))));
    if (!copy_setting(cfg->region, sizeof cfg->region, region ? region : "us-east-1")) {
        pv_err_set(err, "config", "AWS region name too long");
        rc = -1;
        goto out;
    }

    const char *endpoint = first(o_endpoint, first(env_nonempty("AWS_ENDPOINT_URL_S3"),
                                                   first(env_nonempty("AWS_ENDPOINT_URL"),
                                                         first(ini_get(&conf, "s3.endpoint_url"),
                                                               ini_get(&conf, "endpoint_url")))));
    if (endpoint) {
        if (strncmp(endpoint, "http://", 7) != 0 && strncmp(endpoint, "https://", 8) != 0) {
            pv_err_set(err, "config",
                       "endpoint URL '%s' must start with https:// (or http://), e.g. "
                       "https://s3.us-west-004.backblazeb2.com",
                       endpoint);
            rc = -1;
            goto out;
        }
        if (!copy_setting(cfg->endpoint, sizeof cfg->endpoint, endpoint)) {
            pv_err_set(err, "config", "endpoint URL too long");
            rc = -1;
            goto out;
        }
        size_t n = strlen(cfg->endpoint);
        while (n > 0 && cfg->endpoint[n - 1] == '/')
            cfg->endpoint[--n] = '\0';
        cfg->path_style = true;
    } else {
        snprintf(cfg->endpoint, sizeof cfg->endpoint, "https://s3.%s.amazonaws.com", cfg->region);
    }
    const char *style = ini_get(&conf, "s3.addressing_style");
    if (style && strcmp(style, "virtual") == 0) cfg->path_style = false;
    if (style && strcmp(style, "path") == 0) cfg->path_style = true;

    const char *ca = first(o_ca, first(env_nonempty("AWS_CA_BUNDLE"), ini_get(&conf, "ca_bundle")));
    if (ca && !copy_setting(cfg->ca_bundle, sizeof cfg->ca_bundle, ca)) {
        pv_err_set(err, "config", "CA bundle path too long");
        rc = -1;
    }
out:
    free(cred.v);
    free(conf.v);
    return rc;
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
