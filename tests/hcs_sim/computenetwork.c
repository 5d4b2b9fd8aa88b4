/* computenetwork.dll (HCN) and vmcompute.dll!HNSCall over one set of networks,
 * endpoints and namespaces, as on Windows where both talk to HNS.  One NAT
 * network named "nat" always exists. */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HCN(name) SIM_API HRESULT computenetwork_##name

#define NAT_ID "a3c1f3a0-6e0b-4d4a-9a53-5a0c0ffee001"
#define ERROR_ACCESS_DENIED_HR HRESULT_FROM_WIN32(ERROR_ACCESS_DENIED)
#define NOT_FOUND_HR HRESULT_FROM_WIN32(ERROR_NOT_FOUND)

typedef struct { uint8_t b[16]; } GUID;

static cJSON *g_networks, *g_endpoints, *g_namespaces;
static unsigned g_next_id;

void net_reset(void)
{
    cJSON_Delete(g_networks);
    cJSON_Delete(g_endpoints);
    cJSON_Delete(g_namespaces);
    g_networks = cJSON_Parse(
        "[{\"ID\":\"" NAT_ID "\",\"Name\":\"nat\",\"Type\":\"NAT\","
        "\"Ipams\":[{\"Type\":\"Static\",\"Subnets\":[{\"IpAddressPrefix\":\"172.20.0.0/16\","
        "\"Routes\":[{\"NextHop\":\"172.20.0.1\",\"DestinationPrefix\":\"0.0.0.0/0\"}]}]}],"
        "\"SchemaVersion\":{\"Major\":2,\"Minor\":0}}]");
    g_endpoints = cJSON_CreateArray();
    g_namespaces = cJSON_CreateArray();
    g_next_id = 0;
}

static cJSON *net_json(void)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "endpoints", cJSON_Duplicate(g_endpoints, 1));
    cJSON_AddItemToObject(o, "namespaces", cJSON_Duplicate(g_namespaces, 1));
    cJSON_AddNumberToObject(o, "next_id", g_next_id);
    return o;
}

/* With a state directory (state.c) endpoints and namespaces are the service's, shared by
 * every process: read under its lock before a call, written back after. */
static int g_net_lock = -1;

static void net_load(void)
{
    g_net_lock = state_lock();
    cJSON *saved = g_net_lock >= 0 ? state_load("net.json") : NULL;
    if (!saved)
        return;
    cJSON_Delete(g_endpoints);
    cJSON_Delete(g_namespaces);
    g_endpoints = cJSON_DetachItemFromObject(saved, "endpoints");
    g_namespaces = cJSON_DetachItemFromObject(saved, "namespaces");
    g_next_id = (unsigned)cJSON_GetNumberValue(cJSON_GetObjectItem(saved, "next_id"));
    cJSON_Delete(saved);
}

static void net_begin(void)
{
    pthread_mutex_lock(&g_lock);
    net_load();
}

static void net_end(void)
{
    if (g_net_lock >= 0) {
        cJSON *o = net_json();
        state_save("net.json", o);
        cJSON_Delete(o);
        state_unlock(g_net_lock);
        g_net_lock = -1;
    }
    pthread_mutex_unlock(&g_lock);
}

/* Called with g_lock held. */
cJSON *net_ledger(void)
{
    net_load();
    cJSON *o = net_json();
    state_unlock(g_net_lock);
    g_net_lock = -1;
    return o;
}

static void guid_text(const GUID *g, char out[37])
{
    uint32_t d1;
    uint16_t d2, d3;
    memcpy(&d1, g->b, 4);
    memcpy(&d2, g->b + 4, 2);
    memcpy(&d3, g->b + 6, 2);
    snprintf(out, 37, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", d1, d2, d3, g->b[8], g->b[9],
             g->b[10], g->b[11], g->b[12], g->b[13], g->b[14], g->b[15]);
}

/* GUID_NULL asks for a fresh id, as hcsshim's create calls do. */
static void new_id(const GUID *g, char out[37])
{
    static const GUID zero;
    if (g && memcmp(g, &zero, sizeof zero)) {
        guid_text(g, out);
        return;
    }
    snprintf(out, 37, "5e1d0000-0000-4000-8000-%012x", ++g_next_id);
}

/* NSPAWN_HCS_SIM_REFUSE_IDS=1: the create calls refuse a caller-chosen id, as HCN may on builds
 * where passing one is undocumented (hcsshim always passes GUID_NULL); read at each call. */
static int refused_id(const GUID *g)
{
    static const GUID zero;
    const char *env = getenv("NSPAWN_HCS_SIM_REFUSE_IDS");
    return env && *env == '1' && g && memcmp(g, &zero, sizeof zero);
}

static cJSON *by_id(cJSON *arr, const char *id)
{
    cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        cJSON *v = cJSON_GetObjectItem(e, "ID");
        if (cJSON_IsString(v) && !strcasecmp(v->valuestring, id))
            return e;
    }
    return NULL;
}

static void detach_by_id(cJSON *arr, const char *id)
{
    int i = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        cJSON *v = cJSON_GetObjectItem(e, "ID");
        if (cJSON_IsString(v) && !strcasecmp(v->valuestring, id)) {
            cJSON_DeleteItemFromArray(arr, i);
            return;
        }
        i++;
    }
}

static HRESULT hcn_error(wchar_t **record, HRESULT hr, const char *msg)
{
    if (record) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "Success", 0);
        cJSON_AddStringToObject(o, "Error", msg);
        cJSON_AddNumberToObject(o, "ErrorCode", hr);
        char *s = cJSON_PrintUnformatted(o);
        *record = out_cotask(s);
        free(s);
        cJSON_Delete(o);
    }
    return hr;
}

/* Records the call, clears the out strings and applies a fault. */
static int hcn_begin(const char *call, const wchar_t *text, const GUID *id, wchar_t **a, wchar_t **b,
                     HRESULT *hr)
{
    cJSON *args = cJSON_CreateArray();
    char g[37], *t = w2u(text);
    if (id) {
        guid_text(id, g);
        cJSON_AddItemToArray(args, cJSON_CreateString(g));
    }
    if (t)
        cJSON_AddItemToArray(args, cJSON_CreateString(t));
    free(t);
    record_json(call, args);
    if (a)
        *a = NULL;
    if (b)
        *b = NULL;
    char *msg = NULL;
    if (!fault_for(call, hr, &msg))
        return 0;
    hcn_error(b, *hr, msg);
    free(msg);
    return 1;
}

static HANDLE new_handle(int kind, const char *id)
{
    sim_handle *h = handle_new(kind, 2);
    h->obj_id = strdup(id);
    return handle_value(h);
}

static HRESULT close_kind(const char *call, HANDLE h, int kind)
{
    record(call, 0, NULL);
    net_begin();
    sim_handle *sh = handle_get(h, kind);
    if (sh)
        handle_close(sh);
    net_end();
    return sh ? S_OK : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
}

/* ---------- networks ---------- */

static HRESULT enumerate(const char *call, cJSON **arr, const wchar_t *q, wchar_t **out, wchar_t **err);

HCN(HcnEnumerateNetworks)(const wchar_t *q, wchar_t **networks, wchar_t **err)
{
    return enumerate("computenetwork!HcnEnumerateNetworks", &g_networks, q, networks, err);
}

HCN(HcnOpenNetwork)(const GUID *id, HANDLE *net, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnOpenNetwork", NULL, id, NULL, err, &hr))
        return hr;
    if (!id || !net)
        return E_INVALIDARG;
    char g[37];
    guid_text(id, g);
    net_begin();
    *net = by_id(g_networks, g) ? new_handle(K_NETWORK, g) : NULL;
    net_end();
    return *net ? S_OK : hcn_error(err, NOT_FOUND_HR, "Network not found.");
}

HCN(HcnCloseNetwork)(HANDLE net) { return close_kind("computenetwork!HcnCloseNetwork", net, K_NETWORK); }

/* ---------- endpoints ---------- */

static cJSON *endpoint_new(const char *id, const char *network, cJSON *settings)
{
    cJSON *e = cJSON_IsObject(settings) ? cJSON_Duplicate(settings, 1) : cJSON_CreateObject();
    cJSON_DeleteItemFromObject(e, "ID");
    cJSON_AddStringToObject(e, "ID", id);
    cJSON_DeleteItemFromObject(e, "HostComputeNetwork");
    cJSON_AddStringToObject(e, "HostComputeNetwork", network);
    unsigned n = (unsigned)cJSON_GetArraySize(g_endpoints) + 2;
    char ip[32], mac[32];
    snprintf(ip, sizeof ip, "172.20.%u.%u", n / 250, n % 250 + 2);
    snprintf(mac, sizeof mac, "00-15-5D-52-C0-%02X", n & 0xFF);
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddStringToObject(cfg, "IpAddress", ip);
    cJSON_AddNumberToObject(cfg, "PrefixLength", 16);
    cJSON *cfgs = cJSON_CreateArray();
    cJSON_AddItemToArray(cfgs, cfg);
    cJSON_AddItemToObject(e, "IpConfigurations", cfgs);
    cJSON_AddStringToObject(e, "MacAddress", mac);
    return e;
}

HCN(HcnCreateEndpoint)(HANDLE net, const GUID *id, const wchar_t *settings, HANDLE *ep, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnCreateEndpoint", settings, id, NULL, err, &hr))
        return hr;
    if (!ep)
        return E_INVALIDARG;
    *ep = NULL;
    if (refused_id(id))
        return hcn_error(err, E_INVALIDARG, "The parameter is incorrect.");
    char *s = w2u(settings), eid[37];
    cJSON *doc = cJSON_Parse(s ? s : "");
    free(s);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        return hcn_error(err, E_INVALIDARG, "The endpoint settings are not a JSON object");
    }
    net_begin();
    sim_handle *nh = handle_get(net, K_NETWORK);
    if (nh) {
        new_id(id, eid);
        cJSON_AddItemToArray(g_endpoints, endpoint_new(eid, nh->obj_id, doc));
        *ep = new_handle(K_ENDPOINT, eid);
    }
    net_end();
    cJSON_Delete(doc);
    return nh ? S_OK : hcn_error(err, HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE), "Invalid network handle");
}

static int attached(const char *eid)
{
    cJSON *ns, *r;
    cJSON_ArrayForEach(ns, g_namespaces) cJSON_ArrayForEach(r, cJSON_GetObjectItem(ns, "Resources"))
    {
        cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "Data"), "Id");
        if (cJSON_IsString(d) && !strcasecmp(d->valuestring, eid))
            return 1;
    }
    return 0;
}

/* Refuses while the endpoint is still in a namespace, so teardown order
 * (detach, delete namespace, delete endpoint) is checked. */
static HRESULT endpoint_delete(const char *eid, char **why)
{
    if (!by_id(g_endpoints, eid)) {
        *why = "Element not found.";
        return NOT_FOUND_HR;
    }
    if (attached(eid)) {
        *why = "The endpoint is still attached to a namespace";
        return ERROR_ACCESS_DENIED_HR;
    }
    detach_by_id(g_endpoints, eid);
    return S_OK;
}

HCN(HcnDeleteEndpoint)(const GUID *id, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnDeleteEndpoint", NULL, id, NULL, err, &hr))
        return hr;
    if (!id)
        return E_INVALIDARG;
    char g[37], *why = NULL;
    guid_text(id, g);
    net_begin();
    hr = endpoint_delete(g, &why);
    net_end();
    return hr < 0 ? hcn_error(err, hr, why) : S_OK;
}

HCN(HcnCloseEndpoint)(HANDLE ep) { return close_kind("computenetwork!HcnCloseEndpoint", ep, K_ENDPOINT); }

/* ---------- namespaces ---------- */

HCN(HcnCreateNamespace)(const GUID *id, const wchar_t *settings, HANDLE *ns, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnCreateNamespace", settings, id, NULL, err, &hr))
        return hr;
    if (!ns)
        return E_INVALIDARG;
    if (refused_id(id))
        return hcn_error(err, E_INVALIDARG, "The parameter is incorrect.");
    char nid[37];
    net_begin();
    new_id(id, nid);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "ID", nid);
    cJSON_AddStringToObject(o, "Type", "HostDefault");
    cJSON_AddArrayToObject(o, "Resources");
    cJSON_AddItemToArray(g_namespaces, o);
    *ns = new_handle(K_NAMESPACE, nid);
    net_end();
    return S_OK;
}

HCN(HcnOpenNamespace)(const GUID *id, HANDLE *ns, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnOpenNamespace", NULL, id, NULL, err, &hr))
        return hr;
    if (!id || !ns)
        return E_INVALIDARG;
    char g[37];
    guid_text(id, g);
    net_begin();
    *ns = by_id(g_namespaces, g) ? new_handle(K_NAMESPACE, g) : NULL;
    net_end();
    return *ns ? S_OK : hcn_error(err, NOT_FOUND_HR, "Element not found.");
}

/* {"ResourceType":"Endpoint","RequestType":"Add"|"Remove","Settings":{"EndpointId":...}} */
HCN(HcnModifyNamespace)(HANDLE ns, const wchar_t *settings, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnModifyNamespace", settings, NULL, NULL, err, &hr))
        return hr;
    char *s = w2u(settings);
    cJSON *req = cJSON_Parse(s ? s : "");
    free(s);
    cJSON *type = cJSON_GetObjectItem(req, "RequestType");
    cJSON *eid = cJSON_GetObjectItem(cJSON_GetObjectItem(req, "Settings"), "EndpointId");
    const char *why = NULL;
    hr = S_OK;
    net_begin();
    sim_handle *h = handle_get(ns, K_NAMESPACE);
    cJSON *nso = h ? by_id(g_namespaces, h->obj_id) : NULL;
    cJSON *res = cJSON_GetObjectItem(nso, "Resources");
    if (!nso) {
        hr = h ? NOT_FOUND_HR : HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE);
        why = "Element not found.";
    } else if (!cJSON_IsString(type) || !cJSON_IsString(eid) ||
               strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(req, "ResourceType")) ?: "", "Endpoint")) {
        hr = E_INVALIDARG;
        why = "Only Endpoint Add/Remove requests are simulated";
    } else if (!strcmp(type->valuestring, "Add")) {
        if (!by_id(g_endpoints, eid->valuestring)) {
            hr = NOT_FOUND_HR;
            why = "Element not found.";
        } else {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddStringToObject(r, "Type", "Endpoint");
            cJSON *d = cJSON_AddObjectToObject(r, "Data");
            cJSON_AddStringToObject(d, "Id", eid->valuestring);
            cJSON_AddItemToArray(res, r);
        }
    } else {
        int i = 0, found = 0;
        cJSON *r;
        cJSON_ArrayForEach(r, res)
        {
            cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(r, "Data"), "Id");
            if (cJSON_IsString(d) && !strcasecmp(d->valuestring, eid->valuestring)) {
                found = 1;
                break;
            }
            i++;
        }
        if (found)
            cJSON_DeleteItemFromArray(res, i);
        else {
            hr = NOT_FOUND_HR;
            why = "Element not found.";
        }
    }
    net_end();
    cJSON_Delete(req);
    return hr < 0 ? hcn_error(err, hr, why) : S_OK;
}

HCN(HcnDeleteNamespace)(const GUID *id, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin("computenetwork!HcnDeleteNamespace", NULL, id, NULL, err, &hr))
        return hr;
    if (!id)
        return E_INVALIDARG;
    char g[37];
    guid_text(id, g);
    net_begin();
    int found = by_id(g_namespaces, g) != NULL;
    detach_by_id(g_namespaces, g);
    net_end();
    return found ? S_OK : hcn_error(err, NOT_FOUND_HR, "Element not found.");
}

HCN(HcnCloseNamespace)(HANDLE ns) { return close_kind("computenetwork!HcnCloseNamespace", ns, K_NAMESPACE); }

/* ---------- enumerating and querying ---------- */

/* The ids of `arr`'s objects as a JSON array string (HcnEnumerate*): only those whose Name is the
 * query's Filter's, when it has one. */
static HRESULT enumerate(const char *call, cJSON **arr, const wchar_t *q, wchar_t **out, wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin(call, q, NULL, out, err, &hr))
        return hr;
    char *qs = w2u(q);
    cJSON *query = cJSON_Parse(qs ? qs : "{}"), *filter = NULL;
    cJSON *f = cJSON_GetObjectItem(query, "Filter");
    if (cJSON_IsString(f))
        filter = cJSON_Parse(f->valuestring);
    cJSON *want = cJSON_GetObjectItem(filter, "Name");
    cJSON *ids = cJSON_CreateArray(), *o;
    net_begin();
    cJSON_ArrayForEach(o, *arr)
    {
        cJSON *name = cJSON_GetObjectItem(o, "Name");
        if (cJSON_IsString(want) && !(cJSON_IsString(name) && !strcmp(want->valuestring, name->valuestring)))
            continue;
        cJSON_AddItemToArray(ids, cJSON_CreateString(cJSON_GetObjectItem(o, "ID")->valuestring));
    }
    net_end();
    char *s = cJSON_PrintUnformatted(ids);
    if (out)
        *out = out_cotask(s);
    free(s);
    cJSON_Delete(ids);
    cJSON_Delete(filter);
    cJSON_Delete(query);
    free(qs);
    return S_OK;
}

/* The object behind a handle as its JSON properties (HcnQuery*Properties; the query is not read). */
static HRESULT query(const char *call, cJSON **arr, int kind, HANDLE h, const wchar_t *q, wchar_t **out,
                     wchar_t **err)
{
    HRESULT hr;
    if (hcn_begin(call, q, NULL, out, err, &hr))
        return hr;
    net_begin();
    sim_handle *sh = handle_get(h, kind);
    cJSON *o = sh ? by_id(*arr, sh->obj_id) : NULL;
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    net_end();
    if (!s)
        return sh ? hcn_error(err, NOT_FOUND_HR, "Element not found.")
                  : hcn_error(err, HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE), "Invalid handle");
    if (out)
        *out = out_cotask(s);
    free(s);
    return S_OK;
}

HCN(HcnEnumerateEndpoints)(const wchar_t *q, wchar_t **endpoints, wchar_t **err)
{
    return enumerate("computenetwork!HcnEnumerateEndpoints", &g_endpoints, q, endpoints, err);
}

HCN(HcnEnumerateNamespaces)(const wchar_t *q, wchar_t **namespaces, wchar_t **err)
{
    return enumerate("computenetwork!HcnEnumerateNamespaces", &g_namespaces, q, namespaces, err);
}

HCN(HcnQueryEndpointProperties)(HANDLE ep, const wchar_t *q, wchar_t **properties, wchar_t **err)
{
    return query("computenetwork!HcnQueryEndpointProperties", &g_endpoints, K_ENDPOINT, ep, q, properties, err);
}

HCN(HcnQueryNamespaceProperties)(HANDLE ns, const wchar_t *q, wchar_t **properties, wchar_t **err)
{
    return query("computenetwork!HcnQueryNamespaceProperties", &g_namespaces, K_NAMESPACE, ns, q, properties, err);
}

/* ---------- HNS v1 ---------- */

static char *hns_reply(int ok, const char *error, cJSON *output)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "Success", ok);
    if (error)
        cJSON_AddStringToObject(o, "Error", error);
    if (output)
        cJSON_AddItemToObject(o, "Output", output);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Networks: GET /networks/; endpoints: GET and POST /endpoints/, GET and DELETE /endpoints/<id>. */
static char *hns(const char *method, const char *path, const char *request)
{
    const char *tail = NULL;
    if (!strcasecmp(method, "GET") && !strcasecmp(path, "/networks/"))
        return hns_reply(1, NULL, cJSON_Duplicate(g_networks, 1));
    if (!strncasecmp(path, "/endpoints/", 11))
        tail = path + 11;
    if (tail && !*tail && !strcasecmp(method, "GET"))
        return hns_reply(1, NULL, cJSON_Duplicate(g_endpoints, 1));
    if (tail && !*tail && !strcasecmp(method, "POST")) {
        cJSON *req = cJSON_Parse(request ? request : "");
        cJSON *net = cJSON_GetObjectItem(req, "VirtualNetwork");
        if (!cJSON_IsString(net) || !by_id(g_networks, net->valuestring)) {
            cJSON_Delete(req);
            return hns_reply(0, "Network not found.", NULL);
        }
        char eid[37];
        new_id(NULL, eid);
        cJSON *e = endpoint_new(eid, net->valuestring, req);
        cJSON_AddItemToArray(g_endpoints, e);
        cJSON_Delete(req);
        return hns_reply(1, NULL, cJSON_Duplicate(e, 1));
    }
    if (tail && *tail && !strcasecmp(method, "GET")) {
        cJSON *e = by_id(g_endpoints, tail);
        return e ? hns_reply(1, NULL, cJSON_Duplicate(e, 1)) : hns_reply(0, "Element not found.", NULL);
    }
    if (tail && *tail && !strcasecmp(method, "DELETE")) {
        char *why = NULL;
        return endpoint_delete(tail, &why) < 0 ? hns_reply(0, why, NULL) : hns_reply(1, NULL, NULL);
    }
    return hns_reply(0, "This HNS request is not simulated", NULL);
}

SIM_API HRESULT vmcompute_HNSCall(const wchar_t *method, const wchar_t *path, const wchar_t *request,
                                  wchar_t **response)
{
    const wchar_t *args[] = {method, path, request};
    record("vmcompute!HNSCall", 3, args);
    if (response)
        *response = NULL;
    HRESULT hr;
    if (fault_for("vmcompute!HNSCall", &hr, NULL))
        return hr;
    if (!method || !path || !response)
        return E_INVALIDARG;
    char *m = w2u(method), *p = w2u(path), *r = w2u(request);
    net_begin();
    char *reply = hns(m, p, r);
    net_end();
    *response = out_cotask(reply);
    free(reply);
    free(m);
    free(p);
    free(r);
    return S_OK;
}
