/*
 * An NVTX tool for the tests: a library that NVTX 3 loads from the path in
 * NVTX_INJECTION64_PATH at the process's first NVTX call. It records every
 * domain creation, domain range push and pop (the calls bnorm makes) in
 * memory; the test reads the record through nvtx_recorder_events().
 */
#include <nvtx3/nvToolsExt.h>

#include <stdio.h>

#include "nvtx_recorder.h"

#define MAX_EVENTS 4096
#define MAX_DOMAINS 16

struct nvtxDomainRegistration_st {
  char name[64];
};

static struct nvtxDomainRegistration_st g_domains[MAX_DOMAINS];
static int g_domain_count = 0;
static NvtxRecorderEvent g_events[MAX_EVENTS];
static int g_event_count = 0;

static void record(int kind, nvtxDomainHandle_t d, const char* name) {
  NvtxRecorderEvent* e;
  if (g_event_count >= MAX_EVENTS) return;
  e = &g_events[g_event_count++];
  e->kind = kind;
  snprintf(e->domain, sizeof e->domain, "%s", d ? d->name : "(default)");
  snprintf(e->name, sizeof e->name, "%s", name ? name : "");
}

static nvtxDomainHandle_t NVTX_API domain_create(const char* name) {
  if (g_domain_count >= MAX_DOMAINS) return NULL;
  snprintf(g_domains[g_domain_count].name, sizeof g_domains[0].name, "%s", name ? name : "");
  return &g_domains[g_domain_count++];
}

static int NVTX_API range_push(nvtxDomainHandle_t d, const nvtxEventAttributes_t* a) {
  record(NVTX_RECORDER_PUSH, d,
         a && a->messageType == NVTX_MESSAGE_TYPE_ASCII ? a->message.ascii : "(not ascii)");
  return 0;
}

static int NVTX_API range_pop(nvtxDomainHandle_t d) {
  record(NVTX_RECORDER_POP, d, NULL);
  return 0;
}

__attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_export_table) {
  const NvtxExportTableCallbacks* cb =
      (const NvtxExportTableCallbacks*)get_export_table(NVTX_ETID_CALLBACKS);
  NvtxFunctionTable table = NULL;
  unsigned int size = 0;
  if (!cb || !cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &table, &size) || !table ||
      size <= NVTX_CBID_CORE2_DomainCreateA)
    return 0;
  *table[NVTX_CBID_CORE2_DomainCreateA] = (NvtxFunctionPointer)domain_create;
  *table[NVTX_CBID_CORE2_DomainRangePushEx] = (NvtxFunctionPointer)range_push;
  *table[NVTX_CBID_CORE2_DomainRangePop] = (NvtxFunctionPointer)range_pop;
  return 1;
}

__attribute__((visibility("default"))) const NvtxRecorderEvent* nvtx_recorder_events(int* count) {
  *count = g_event_count;
  return g_events;
}
