/*
 * xml.c: S3 answers (listings, upload ids, errors) parsed with expat into
 * a small element tree. Attributes, comments and namespaces are ignored:
 * S3 carries everything in element text. Depth and size are bounded.
 */
#include "s3int.h"

#include <expat.h>
#include <stdlib.h>
#include <string.h>

#define XML_MAX_DEPTH 32

typedef struct {
    s3_xml *root;
    s3_xml *stack[XML_MAX_DEPTH];
    s3_buf text[XML_MAX_DEPTH];
    int depth;
    bool too_deep;
    XML_Parser parser;
} xml_ctx;

static void xml_start(void *ud, const XML_Char *name, const XML_Char **attrs)
{
    (void)attrs;
    xml_ctx *c = ud;
    if (c->depth >= XML_MAX_DEPTH) {
        c->too_deep = true;
        XML_StopParser(c->parser, XML_FALSE);
        return;
    }
    s3_xml *x = calloc(1, sizeof *x);
    if (!x) abort();
    const char *colon = strrchr(name, ':');
    x->name = s3_xstrdup(colon ? colon + 1 : name);
    if (c->depth == 0) {
        if (!c->root)
            c->root = x;
        else {
            free(x->name);
            free(x);
            c->too_deep = true;
            XML_StopParser(c->parser, XML_FALSE);
            return;
        }
    } else {
        s3_xml *parent = c->stack[c->depth - 1];
        s3_xml **tail = &parent->child;
        while (*tail)
            tail = &(*tail)->next;
        *tail = x;
    }
    c->stack[c->depth] = x;
    c->text[c->depth].len = 0;
    c->depth++;
}

static void xml_end(void *ud, const XML_Char *name)
{
    (void)name;
    xml_ctx *c = ud;
    if (c->depth <= 0) return;
    c->depth--;
    c->stack[c->depth]->text = s3_xstrdup(s3_buf_str(&c->text[c->depth]));
}

static void xml_chars(void *ud, const XML_Char *s, int len)
{
    xml_ctx *c = ud;
    if (c->depth > 0 && len > 0) s3_buf_add(&c->text[c->depth - 1], s, (size_t)len);
}

void s3_xml_free(s3_xml *x)
{
    while (x) {
        s3_xml *next = x->next;
        s3_xml_free(x->child);
        free(x->name);
        free(x->text);
        free(x);
        x = next;
    }
}

s3_xml *s3_xml_parse(const char *data, size_t len, pv_err *err)
{
    if (len > 64u * 1024 * 1024) {
        pv_err_set(err, "s3", "XML answer too large (%zu bytes)", len);
        return NULL;
    }
    xml_ctx c;
    memset(&c, 0, sizeof c);
    c.parser = XML_ParserCreate("UTF-8");
    if (!c.parser) abort();
    XML_SetUserData(c.parser, &c);
    XML_SetElementHandler(c.parser, xml_start, xml_end);
    XML_SetCharacterDataHandler(c.parser, xml_chars);
    enum XML_Status st = XML_Parse(c.parser, data, (int)len, XML_TRUE);
    bool ok = st == XML_STATUS_OK && !c.too_deep && c.root && c.depth == 0;
    if (!ok) {
        if (c.too_deep)
            pv_err_set(err, "s3", "malformed XML answer: too deep or more than one root");
        else if (st != XML_STATUS_OK)
            pv_err_set(err, "s3", "malformed XML answer: %s at line %lu",
                       XML_ErrorString(XML_GetErrorCode(c.parser)),
                       (unsigned long)XML_GetCurrentLineNumber(c.parser));
        else
            pv_err_set(err, "s3", "malformed XML answer: no root element");
        s3_xml_free(c.root);
        c.root = NULL;
    }
    for (int i = 0; i < XML_MAX_DEPTH; i++)
        s3_buf_free(&c.text[i]);
    XML_ParserFree(c.parser);
    return c.root;
}

s3_xml *s3_xml_child(const s3_xml *x, const char *name)
{
    if (!x) return NULL;
    for (s3_xml *c = x->child; c; c = c->next)
        if (strcmp(c->name, name) == 0) return c;
    return NULL;
}

const char *s3_xml_text(const s3_xml *x, const char *name)
{
    s3_xml *c = s3_xml_child(x, name);
    return c && c->text ? c->text : NULL;
}

void s3_xml_escape(s3_buf *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&':
            s3_buf_adds(out, "&amp;");
            break;
        case '<':
            s3_buf_adds(out, "&lt;");
            break;
        case '>':
            s3_buf_adds(out, "&gt;");
            break;
        case '"':
            s3_buf_adds(out, "&quot;");
            break;
        case '\r':
            s3_buf_adds(out, "&#13;");
            break;
        default:
            s3_buf_add(out, s, 1);
        }
    }
}
