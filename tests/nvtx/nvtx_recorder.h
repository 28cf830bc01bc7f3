/* The record kept by nvtx_recorder.c, an NVTX tool for the tests. */
#ifndef BNORM_TESTS_NVTX_RECORDER_H_
#define BNORM_TESTS_NVTX_RECORDER_H_

enum { NVTX_RECORDER_PUSH = 1, NVTX_RECORDER_POP = 2 };

typedef struct {
  int kind;         /* NVTX_RECORDER_PUSH or NVTX_RECORDER_POP */
  char domain[64];  /* the domain's name ("(default)" for the global one) */
  char name[96];    /* the range's message (pushes) */
} NvtxRecorderEvent;

/* Every event so far, oldest first. */
typedef const NvtxRecorderEvent* (*NvtxRecorderEventsFn)(int* count);

#endif
