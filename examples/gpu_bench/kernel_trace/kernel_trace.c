/*
 * kernel_trace: a CUDA injection library that records every GPU kernel,
 * memcpy and memset of a process, and every CUDA driver API call, through
 * NVIDIA's CUPTI Activity API, and writes them as tab-separated lines when
 * the process exits.
 *
 * It profiles Forge's Rust binaries and mlx-lm's Python process the same
 * way (no rebuild, no code change in either): the CUDA driver loads the
 * library named by CUDA_INJECTION64_PATH at initialisation and calls its
 * exported `InitializeInjection`. Unlike Nsight Compute's kernel replay it
 * does not serialise or re-run kernels, so MLX's run-time (NVRTC) kernels
 * are traced like any other.
 *
 *   CUDA_INJECTION64_PATH=/path/libkernel_trace.so \
 *   KERNEL_TRACE_OUT=trace.tsv  <command>
 *
 * Output lines: `K start end name` (kernel), `M start end bytes kind`
 * (memcpy), `S start end bytes` (memset), `D start end name` (driver API
 * call) and `R start end name` (CUDA runtime API call: graph updates and
 * launches show here), both on the calling host thread; times in
 * nanoseconds on CUPTI's clock. KERNEL_TRACE_NO_API=1 records kernels,
 * copies and sets only.
 * `analyze.py` turns a trace into a per-step breakdown.
 */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE (8u << 20)

static FILE *out;

#define CHECK(call)                                                            \
  do {                                                                         \
    CUptiResult r_ = (call);                                                   \
    if (r_ != CUPTI_SUCCESS) {                                                 \
      const char *msg_;                                                        \
      cuptiGetResultString(r_, &msg_);                                         \
      fprintf(stderr, "kernel_trace: %s failed: %s\n", #call, msg_);           \
    }                                                                          \
  } while (0)

static void CUPTIAPI requested(uint8_t **buffer, size_t *size,
                               size_t *max_records) {
  /* malloc's alignment (16 bytes on glibc) covers CUPTI's 8. */
  *buffer = (uint8_t *)malloc(BUF_SIZE);
  *size = *buffer == NULL ? 0 : BUF_SIZE;
  *max_records = 0;
}

/* Kernel names may hold tabs or newlines in principle; keep lines parseable. */
static void put_name(const char *s) {
  if (s == NULL) {
    fputs("?", out);
    return;
  }
  for (; *s; s++)
    fputc((*s == '\t' || *s == '\n') ? ' ' : *s, out);
}

static void CUPTIAPI completed(CUcontext ctx, uint32_t stream, uint8_t *buffer,
                               size_t size, size_t valid) {
  (void)ctx;
  (void)stream;
  (void)size;
  CUpti_Activity *rec = NULL;
  while (out != NULL &&
         cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    switch (rec->kind) {
    case CUPTI_ACTIVITY_KIND_KERNEL:
    case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
      CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *)rec;
      fprintf(out, "K\t%llu\t%llu\t", (unsigned long long)k->start,
              (unsigned long long)k->end);
      put_name(k->name);
      fputc('\n', out);
      break;
    }
    case CUPTI_ACTIVITY_KIND_MEMCPY: {
      CUpti_ActivityMemcpy6 *m = (CUpti_ActivityMemcpy6 *)rec;
      fprintf(out, "M\t%llu\t%llu\t%llu\t%u\n", (unsigned long long)m->start,
              (unsigned long long)m->end, (unsigned long long)m->bytes,
              (unsigned)m->copyKind);
      break;
    }
    case CUPTI_ACTIVITY_KIND_MEMSET: {
      CUpti_ActivityMemset4 *m = (CUpti_ActivityMemset4 *)rec;
      fprintf(out, "S\t%llu\t%llu\t%llu\n", (unsigned long long)m->start,
              (unsigned long long)m->end, (unsigned long long)m->bytes);
      break;
    }
    case CUPTI_ACTIVITY_KIND_DRIVER:
    case CUPTI_ACTIVITY_KIND_RUNTIME: {
      CUpti_ActivityAPI *a = (CUpti_ActivityAPI *)rec;
      const char *name = NULL;
      int driver = rec->kind == CUPTI_ACTIVITY_KIND_DRIVER;
      cuptiGetCallbackName(driver ? CUPTI_CB_DOMAIN_DRIVER_API
                                  : CUPTI_CB_DOMAIN_RUNTIME_API,
                           a->cbid, &name);
      fprintf(out, "%c\t%llu\t%llu\t", driver ? 'D' : 'R',
              (unsigned long long)a->start, (unsigned long long)a->end);
      put_name(name);
      fputc('\n', out);
      break;
    }
    default:
      break;
    }
  }
  size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped);
  if (dropped != 0)
    fprintf(stderr, "kernel_trace: %zu records dropped\n", dropped);
  free(buffer);
}

static void finish(void) {
  cuptiActivityFlushAll(1);
  if (out != NULL) {
    fclose(out);
    out = NULL;
  }
}

int InitializeInjection(void) {
  const char *path = getenv("KERNEL_TRACE_OUT");
  if (path == NULL)
    path = "kernel_trace.tsv";
  out = fopen(path, "w");
  if (out == NULL) {
    perror("kernel_trace: cannot open the output file");
    return 0;
  }
  CHECK(cuptiActivityRegisterCallbacks(requested, completed));
  CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY));
  CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET));
  if (getenv("KERNEL_TRACE_NO_API") == NULL) {
    CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER));
    CHECK(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME));
  }
  atexit(finish);
  return 1;
}
