/*
 * A simulated libnvidia-ml.so.1 for tests: the real nvidia-ml-py bindings load it through ctypes,
 * because no GPU is here. It answers from a scenario file, never from hardware.
 *
 * Build:  gcc -shared -fPIC -O1 -o libnvidia-ml.so.1 fakenvml.c -lpthread
 *         add -DMLTOP_FAKE_OLD_DRIVER for an older driver that lacks nvmlDeviceGet*RunningProcesses_v3,
 *         nvmlDeviceGetCurrentClocksEventReasons (only the older ...ThrottleReasons name),
 *         nvmlDeviceGetProcessUtilization and nvmlDeviceGetMemoryInfo_v2.
 *
 * The scenario file is named by $MLTOP_FAKE_NVML_SCENARIO and is (re)read at every nvmlInit*, so one
 * process can switch scenarios between nvmlShutdown and the next init. When the variable is unset or the
 * file cannot be parsed, init fails with NVML_ERROR_UNKNOWN (999) and says why on stderr.
 *
 * Scenario format: one directive a line, words separated by blanks, `key=value` words in any order,
 * values with blanks in double quotes (key="NVIDIA H100 80GB HBM3"), numbers decimal or 0x-hex,
 * `#` starts a comment line.
 *
 *   init_error CODE            nvmlInit* returns CODE (e.g. 18 = LIB_RM_VERSION_MISMATCH, 9 = DRIVER_NOT_LOADED)
 *   init_delay SECONDS         every nvmlInit* takes SECONDS (fractions allowed) before it answers, as on a host
 *                              without persistence mode, where init waits for the driver to bring the GPUs up
 *   driver VERSION             nvmlSystemGetDriverVersion, e.g. 550.54.15
 *   cuda N                     nvmlSystemGetCudaDriverVersion(_v2), e.g. 12040
 *   gpu index=I uuid=S name=S util=% mem_util=% mem_total=B mem_used=B temp=C power_mw=MW
 *       power_limit_mw=MW clocks_event=MASK persistence=0|1 pci=DDDDDDDD:BB:DD.F
 *       [lost=1] [util_ts=US]
 *                              one GPU; devices are numbered in file order (index= must match it).
 *                              lost=1: every query on it returns GPU_IS_LOST (the handle still resolves).
 *                              util_ts: the fixed timestamp (us) of its process-utilisation samples;
 *                              without it, samples are stamped with the wall clock at each call.
 *   proc gpu=I pid=P type=compute|graphics|mps mem=B|na [sm=%] [sm_prev=%]
 *                              a process on GPU I. mem=na -> NVML_VALUE_NOT_AVAILABLE. type=mps: an MPS
 *                              client, listed by nvmlDeviceGetMPSComputeRunningProcesses(_v2,_v3) only (the
 *                              MPS server itself is a compute process). A process with
 *                              sm>0 has a utilisation sample at the GPU's sample time; sm_prev adds an
 *                              older sample (1 s earlier) so the reader must keep the newest.
 *       [step_ms=MS] [HEALTH=V ...]
 *                              HEALTH keys (absent: the call returns NOT_SUPPORTED, as on GPUs without it):
 *                              sm_clock sm_clock_max mem_clock mem_clock_max (MHz), pstate (0-15), fan (%),
 *                              ecc_mode (0|1), ecc_vol_corr ecc_vol_unc ecc_agg_corr ecc_agg_unc (counts),
 *                              retired_pending (0|1), remap_corr remap_unc remap_pending remap_failed,
 *                              pcie_gen pcie_gen_max pcie_width pcie_width_max, pcie_tx_kbs pcie_rx_kbs,
 *                              enc dec (%), compute_mode (0 default, 2 prohibited, 3 exclusive process),
 *                              mig_mode (0|1).
 *                              Sequences: util, mem_util, mem_used, temp, power_mw and every HEALTH key take
 *                              a comma list (util=10,60,95): the value in force is item
 *                              (ms since nvmlInit / step_ms) modulo its length, so values change over time.
 *   mig gpu=I index=J uuid=S mem_total=B mem_used=B gi=N ci=N [profile=1g.10gb]
 *                              a MIG device in slot J of GPU I (set mig_mode=1 on the GPU): its handle answers
 *                              nvmlDeviceGetName ("<GPU name> MIG <profile>"), nvmlDeviceGetUUID, nvmlDeviceGetMemoryInfo(_v2), nvmlDeviceGetGpuInstanceId,
 *                              nvmlDeviceGetComputeInstanceId and the running-process calls (procs with mig=J).
 *                              nvmlDeviceGetMaxMigDeviceCount says 7; an empty slot is NOT_FOUND.
 *   proc ... [mig=J]           the process runs on MIG device J of its GPU (also listed on the GPU itself).
 *   proc ... [alive=1]         listed only while host PID P runs (/proc/P/stat there and not a zombie), as the
 *                              driver drops a process that exited: a test can kill it and see it go.
 *   xid gpu=I code=N [at=SECONDS]
 *                              a queued Xid event: nvmlEventSetWait* delivers it once, on a set that
 *                              registered nvmlEventTypeXidCriticalError for GPU I, at least SECONDS after
 *                              nvmlInit.
 *   fail FUNCTION CODE [gpu=I] [times=N]
 *                              FUNCTION (exact NVML symbol, e.g. nvmlDeviceGetPowerUsage) returns CODE
 *                              (3 NOT_SUPPORTED, 15 GPU_IS_LOST, ...), for GPU I only when given, for
 *                              the next N calls only when given.
 *   hang FUNCTION SECONDS [gpu=I] [times=N]
 *                              FUNCTION sleeps SECONDS (fractions allowed) before answering normally.
 *   fail and hang also take [after=K]: the first K matching calls answer normally (a driver that works,
 *                              then hangs).
 *
 *   gpu ... gpm=1              the GPU supports GPU Performance Metrics (nvmlGpmQueryDeviceSupport says so);
 *                              without it (an older GPU) every GPM sample call answers NOT_SUPPORTED.
 *   gpm gpu=I [gi=N] id=METRIC value=V[,V...]
 *                              GPM metric METRIC (NVML_GPM_METRIC_*: 2 SM_UTIL, 5 ANY_TENSOR_UTIL, 20
 *                              PCIE_TX_PER_SEC in MiB/s, ...) of GPU I, or of its MIG GPU instance N: a
 *                              value (a double) or a sequence stepping every step_ms like the others.
 *                              nvmlGpmMetricsGet answers the time average of the value between its two
 *                              samples' times, as the driver computes counters between two samples; a
 *                              metric the scenario does not give answers NOT_SUPPORTED in its nvmlReturn.
 *                              Samples from different GPUs/instances, or not newer than the first, are
 *                              INVALID_ARGUMENT. fakenvmlGpmLiveSamples() (not NVML) counts allocated samples.
 *
 *   nvlink gpu=I link=L [count=N] [state=1|0] [replay=V[,V...]] [recovery=V...] [crc_flit=V...] [crc_data=V...]
 *                              NVLink L of GPU I (count=N: links L..L+N-1 alike): nvmlDeviceGetNvLinkState says
 *                              state (default 1, active), nvmlDeviceGetNvLinkErrorCounter the four DL counters
 *                              (NVML_NVLINK_ERROR_DL_REPLAY 0, DL_RECOVERY 1, DL_CRC_FLIT 2, DL_CRC_DATA 3), each a
 *                              value or a sequence stepping every step_ms like the others (default 0). A GPU with
 *                              no nvlink line answers NOT_SUPPORTED for every link (a PCIe board); a link past the
 *                              last one declared answers INVALID_ARGUMENT, as NVML does past the GPU's links.
 *   fabric gpu=I state=S [status=R] [clique=N] [health=MASK]
 *                              nvmlDeviceGetGpuFabricInfo(V) of GPU I: state (0 NOT_SUPPORTED, 1 NOT_STARTED,
 *                              2 IN_PROGRESS, 3 COMPLETED) and status (an nvmlReturn_t, default 0). Without a
 *                              fabric line the call answers NOT_SUPPORTED (a board without NVSwitch, older
 *                              driver). The old-driver build lacks the versioned nvmlDeviceGetGpuFabricInfoV.
 *
 * nvmlDeviceGetProcessUtilization follows NVML: it returns only samples newer than lastSeenTimeStamp, and
 * NVML_ERROR_NOT_FOUND when there are none; a NULL buffer or a short count gets INSUFFICIENT_SIZE and the
 * needed count.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

/* --------------------------------------------------------------------------- NVML types */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;
#define NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

/* nvmlProcessInfo_v2_t and nvmlProcessInfo_t (the _v3 calls) share this layout. */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

#define NVML_VALUE_NOT_AVAILABLE_ULL (~0ULL)

/* --------------------------------------------------------------------------- scenario state */

#define MAX_GPUS 16
#define MAX_PROCS 256
#define MAX_DIRECTIVES 64
#define MAX_SEQ 32
#define MAX_XIDS 64
#define MAX_GPM 512
#define MAX_NVLINKS 36 /* NVML_NVLINK_MAX_LINKS of the nvidia-ml-py in use */
#define STR 128

/* A value that may change over time: item (ms since init / step) modulo n. n == 0: not set. */
struct seq {
    int n;
    unsigned long long v[MAX_SEQ];
};

enum health_field {
    HF_SM_CLOCK, HF_SM_CLOCK_MAX, HF_MEM_CLOCK, HF_MEM_CLOCK_MAX, HF_PSTATE, HF_FAN, HF_ECC_MODE,
    HF_ECC_VOL_CORR, HF_ECC_VOL_UNC, HF_ECC_AGG_CORR, HF_ECC_AGG_UNC, HF_RETIRED_PENDING, HF_REMAP_CORR,
    HF_REMAP_UNC, HF_REMAP_PENDING, HF_REMAP_FAILED, HF_PCIE_GEN, HF_PCIE_GEN_MAX, HF_PCIE_WIDTH,
    HF_PCIE_WIDTH_MAX, HF_PCIE_TX_KBS, HF_PCIE_RX_KBS, HF_ENC, HF_DEC, HF_COMPUTE_MODE, HF_MIG_MODE, HF_COUNT
};
static const char *health_names[HF_COUNT] = {
    "sm_clock", "sm_clock_max", "mem_clock", "mem_clock_max", "pstate", "fan", "ecc_mode",
    "ecc_vol_corr", "ecc_vol_unc", "ecc_agg_corr", "ecc_agg_unc", "retired_pending", "remap_corr",
    "remap_unc", "remap_pending", "remap_failed", "pcie_gen", "pcie_gen_max", "pcie_width",
    "pcie_width_max", "pcie_tx_kbs", "pcie_rx_kbs", "enc", "dec", "compute_mode", "mig_mode",
};

typedef struct {
    void *device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;
#define NVML_EVENT_TYPE_XID 0x8ULL

struct fake_gpu {
    int index;
    char uuid[STR];
    char name[STR];
    unsigned int util, mem_util;
    unsigned long long mem_total, mem_used;
    unsigned int temp, power_mw, power_limit_mw;
    unsigned long long clocks_event;
    unsigned int persistence;
    char pci[STR];
    int lost;
    unsigned long long util_ts; /* 0 = wall clock */
    unsigned long long step_ms;
    struct seq util_s, mem_util_s, mem_used_s, temp_s, power_s; /* n == 0: the plain value above */
    struct seq health[HF_COUNT];
    unsigned long long events; /* event types registered on the (one) event set */
    int gpm;                   /* supports GPU Performance Metrics */
    int nvlinks;               /* links declared (0: no NVLink) */
    unsigned int nvlink_state[MAX_NVLINKS];
    struct seq nvlink_errors[MAX_NVLINKS][4]; /* n == 0: 0 */
    int has_fabric;
    unsigned int fabric_state, fabric_status, fabric_clique, fabric_health;
};

/* One GPM metric of a GPU (gi -1) or of one of its MIG GPU instances. */
struct gpm_metric {
    int gpu, gi;
    unsigned int id;
    int n;
    double v[MAX_SEQ];
};

struct xid_event {
    int gpu;
    unsigned long long code;
    double at_s;
    int delivered;
};

struct fake_mig {
    int gpu, index;
    char uuid[STR];
    unsigned long long mem_total, mem_used;
    unsigned int gi, ci;
    char profile[STR]; /* e.g. 1g.10gb: its name is "<GPU name> MIG <profile>" */
};

struct fake_proc {
    int mig; /* -1: none */
    int gpu;
    unsigned int pid;
    int graphics; /* 0 compute, 1 graphics, 2 an MPS client */
    unsigned long long mem;
    unsigned int sm, sm_prev;
    int has_sm_prev;
    int alive; /* 1: listed only while /proc/<pid> runs */
};

struct directive {
    int hang;             /* 0 = fail, 1 = hang */
    char function[STR];
    int code;             /* fail */
    double seconds;       /* hang */
    int gpu;              /* -1 = any */
    int times;            /* -1 = always */
    int after;            /* matching calls to let through first */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int init_count;
static char driver_version[STR];
static int cuda_version;
static double init_delay_s; /* init_delay: how long every nvmlInit* takes */
static struct fake_gpu gpus[MAX_GPUS];
static int gpu_count;
static struct fake_proc procs[MAX_PROCS];
static int proc_count;
static struct directive directives[MAX_DIRECTIVES];
static int directive_count;
static struct fake_mig migs[MAX_GPUS * 7];
static int mig_count;
static struct xid_event xids[MAX_XIDS];
static struct gpm_metric gpm_metrics[MAX_GPM];
static int gpm_count;
static int xid_count;
static struct timeval init_time;
static int event_set_token;

static unsigned long long ms_since_init(void) {
    struct timeval now;
    gettimeofday(&now, NULL);
    long long ms = (now.tv_sec - init_time.tv_sec) * 1000LL + (now.tv_usec - init_time.tv_usec) / 1000;
    return ms < 0 ? 0 : (unsigned long long)ms;
}

static unsigned long long seq_value(const struct fake_gpu *g, const struct seq *s, unsigned long long plain) {
    if (s->n == 0) return plain;
    unsigned long long step = g->step_ms ? g->step_ms : 1000;
    return s->v[(ms_since_init() / step) % s->n];
}

/* --------------------------------------------------------------------------- scenario parsing */

/* Split a line into words; a word may hold "quoted text" (the quotes are dropped). */
static int split_words(char *line, char **words, int max) {
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p) break;
        char *out = p;
        words[n++] = out;
        int quoted = 0;
        while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n'))) {
            if (*p == '"') {
                quoted = !quoted;
                p++;
                continue;
            }
            *out++ = *p++;
        }
        if (*p) p++;
        *out = '\0';
    }
    return n;
}

static unsigned long long number(const char *s, int *ok) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) *ok = 0;
    return v;
}

/* "10,60,95" -> a sequence; a single number -> a sequence of one. */
static int parse_seq(const char *v, struct seq *s, int *ok) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    s->n = 0;
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        if (s->n >= MAX_SEQ) {
            *ok = 0;
            break;
        }
        s->v[s->n++] = number(item, ok);
    }
    if (s->n == 0) *ok = 0;
    return s->n;
}

static void copy_str(char *dst, const char *src) {
    snprintf(dst, STR, "%s", src);
}

static int parse_gpu(char **words, int n, int lineno) {
    if (gpu_count >= MAX_GPUS) return 0;
    struct fake_gpu *g = &gpus[gpu_count];
    memset(g, 0, sizeof *g);
    g->index = gpu_count;
    int ok = 1;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "index")) {
            if ((int)number(v, &ok) != gpu_count) {
                fprintf(stderr, "fakenvml: line %d: gpu index=%s is not its position %d\n", lineno, v, gpu_count);
                return 0;
            }
        } else if (!strcmp(k, "uuid")) copy_str(g->uuid, v);
        else if (!strcmp(k, "name")) copy_str(g->name, v);
        else if (!strcmp(k, "util")) { parse_seq(v, &g->util_s, &ok); g->util = g->util_s.v[0]; }
        else if (!strcmp(k, "mem_util")) { parse_seq(v, &g->mem_util_s, &ok); g->mem_util = g->mem_util_s.v[0]; }
        else if (!strcmp(k, "mem_total")) g->mem_total = number(v, &ok);
        else if (!strcmp(k, "mem_used")) { parse_seq(v, &g->mem_used_s, &ok); g->mem_used = g->mem_used_s.v[0]; }
        else if (!strcmp(k, "temp")) { parse_seq(v, &g->temp_s, &ok); g->temp = g->temp_s.v[0]; }
        else if (!strcmp(k, "power_mw")) { parse_seq(v, &g->power_s, &ok); g->power_mw = g->power_s.v[0]; }
        else if (!strcmp(k, "step_ms")) g->step_ms = number(v, &ok);
        else if (!strcmp(k, "power_limit_mw")) g->power_limit_mw = number(v, &ok);
        else if (!strcmp(k, "clocks_event")) g->clocks_event = number(v, &ok);
        else if (!strcmp(k, "persistence")) g->persistence = number(v, &ok);
        else if (!strcmp(k, "pci")) copy_str(g->pci, v);
        else if (!strcmp(k, "lost")) g->lost = number(v, &ok) != 0;
        else if (!strcmp(k, "util_ts")) g->util_ts = number(v, &ok);
        else if (!strcmp(k, "gpm")) g->gpm = number(v, &ok) != 0;
        else {
            int known = 0;
            for (int f = 0; f < HF_COUNT; f++) {
                if (!strcmp(k, health_names[f])) {
                    parse_seq(v, &g->health[f], &ok);
                    known = 1;
                }
            }
            if (!known) {
                fprintf(stderr, "fakenvml: line %d: unknown gpu key %s\n", lineno, k);
                return 0;
            }
        }
    }
    gpu_count++;
    return ok;
}

static int parse_proc(char **words, int n, int lineno) {
    if (proc_count >= MAX_PROCS) return 0;
    struct fake_proc *p = &procs[proc_count];
    memset(p, 0, sizeof *p);
    p->gpu = -1;
    p->mig = -1;
    int ok = 1;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "gpu")) p->gpu = number(v, &ok);
        else if (!strcmp(k, "pid")) p->pid = number(v, &ok);
        else if (!strcmp(k, "type")) {
            if (!strcmp(v, "graphics")) p->graphics = 1;
            else if (!strcmp(v, "mps")) p->graphics = 2; /* listed by the MPS call only */
            else if (strcmp(v, "compute")) ok = 0;
        } else if (!strcmp(k, "mem")) p->mem = strcmp(v, "na") ? number(v, &ok) : NVML_VALUE_NOT_AVAILABLE_ULL;
        else if (!strcmp(k, "sm")) p->sm = number(v, &ok);
        else if (!strcmp(k, "mig")) p->mig = number(v, &ok);
        else if (!strcmp(k, "alive")) p->alive = number(v, &ok);
        else if (!strcmp(k, "sm_prev")) {
            p->sm_prev = number(v, &ok);
            p->has_sm_prev = 1;
        } else {
            fprintf(stderr, "fakenvml: line %d: unknown proc key %s\n", lineno, k);
            return 0;
        }
    }
    if (p->gpu < 0 || p->gpu >= gpu_count) {
        fprintf(stderr, "fakenvml: line %d: proc names no earlier gpu\n", lineno);
        return 0;
    }
    proc_count++;
    return ok;
}

static int parse_mig(char **words, int n, int lineno) {
    if (mig_count >= MAX_GPUS * 7) return 0;
    struct fake_mig *m = &migs[mig_count];
    memset(m, 0, sizeof *m);
    m->gpu = m->index = -1;
    int ok = 1;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "gpu")) m->gpu = number(v, &ok);
        else if (!strcmp(k, "index")) m->index = number(v, &ok);
        else if (!strcmp(k, "uuid")) copy_str(m->uuid, v);
        else if (!strcmp(k, "mem_total")) m->mem_total = number(v, &ok);
        else if (!strcmp(k, "mem_used")) m->mem_used = number(v, &ok);
        else if (!strcmp(k, "gi")) m->gi = number(v, &ok);
        else if (!strcmp(k, "ci")) m->ci = number(v, &ok);
        else if (!strcmp(k, "profile")) copy_str(m->profile, v);
        else {
            fprintf(stderr, "fakenvml: line %d: unknown mig key %s\n", lineno, k);
            return 0;
        }
    }
    if (m->gpu < 0 || m->gpu >= gpu_count || m->index < 0 || m->index >= 7) return 0;
    mig_count++;
    return ok;
}

static int parse_xid(char **words, int n, int lineno) {
    if (xid_count >= MAX_XIDS) return 0;
    struct xid_event *x = &xids[xid_count];
    memset(x, 0, sizeof *x);
    x->gpu = -1;
    int ok = 1;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "gpu")) x->gpu = number(v, &ok);
        else if (!strcmp(k, "code")) x->code = number(v, &ok);
        else if (!strcmp(k, "at")) x->at_s = strtod(v, NULL);
        else {
            fprintf(stderr, "fakenvml: line %d: unknown xid key %s\n", lineno, k);
            return 0;
        }
    }
    if (x->gpu < 0 || x->gpu >= gpu_count) return 0;
    xid_count++;
    return ok;
}

static int parse_gpm(char **words, int n, int lineno) {
    if (gpm_count >= MAX_GPM) return 0;
    struct gpm_metric *m = &gpm_metrics[gpm_count];
    memset(m, 0, sizeof *m);
    m->gpu = m->gi = -1;
    int ok = 1, has_id = 0;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "gpu")) m->gpu = number(v, &ok);
        else if (!strcmp(k, "gi")) m->gi = number(v, &ok);
        else if (!strcmp(k, "id")) { m->id = number(v, &ok); has_id = 1; }
        else if (!strcmp(k, "value")) {
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", v);
            for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                char *end;
                if (m->n >= MAX_SEQ) return 0;
                m->v[m->n++] = strtod(item, &end);
                if (end == item || *end) ok = 0;
            }
        } else {
            fprintf(stderr, "fakenvml: line %d: unknown gpm key %s\n", lineno, k);
            return 0;
        }
    }
    if (m->gpu < 0 || m->gpu >= gpu_count || !has_id || m->n == 0) return 0;
    gpm_count++;
    return ok;
}

static int parse_nvlink(char **words, int n, int lineno) {
    static const char *counters[4] = {"replay", "recovery", "crc_flit", "crc_data"};
    int gpu = -1, link = -1, count = 1, ok = 1;
    unsigned int state = 1;
    struct seq errors[4];
    memset(errors, 0, sizeof errors);
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        int known = 0;
        for (int c = 0; c < 4; c++) {
            if (!strcmp(k, counters[c])) {
                parse_seq(v, &errors[c], &ok);
                known = 1;
            }
        }
        if (known) continue;
        if (!strcmp(k, "gpu")) gpu = number(v, &ok);
        else if (!strcmp(k, "link")) link = number(v, &ok);
        else if (!strcmp(k, "count")) count = number(v, &ok);
        else if (!strcmp(k, "state")) state = number(v, &ok);
        else {
            fprintf(stderr, "fakenvml: line %d: unknown nvlink key %s\n", lineno, k);
            return 0;
        }
    }
    if (gpu < 0 || gpu >= gpu_count || link < 0 || count < 1 || link + count > MAX_NVLINKS) return 0;
    struct fake_gpu *g = &gpus[gpu];
    for (int l = link; l < link + count; l++) {
        g->nvlink_state[l] = state;
        memcpy(g->nvlink_errors[l], errors, sizeof errors);
        if (l + 1 > g->nvlinks) g->nvlinks = l + 1;
    }
    return ok;
}

static int parse_fabric(char **words, int n, int lineno) {
    int gpu = -1, ok = 1;
    unsigned int state = 0, status = 0, clique = 0, health_mask = 0;
    for (int i = 1; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        const char *k = words[i], *v = eq + 1;
        if (!strcmp(k, "gpu")) gpu = number(v, &ok);
        else if (!strcmp(k, "state")) state = number(v, &ok);
        else if (!strcmp(k, "status")) status = number(v, &ok);
        else if (!strcmp(k, "clique")) clique = number(v, &ok);
        else if (!strcmp(k, "health")) health_mask = number(v, &ok);
        else {
            fprintf(stderr, "fakenvml: line %d: unknown fabric key %s\n", lineno, k);
            return 0;
        }
    }
    if (gpu < 0 || gpu >= gpu_count) return 0;
    struct fake_gpu *g = &gpus[gpu];
    g->has_fabric = 1;
    g->fabric_state = state;
    g->fabric_status = status;
    g->fabric_clique = clique;
    g->fabric_health = health_mask;
    return ok;
}

static int parse_directive(char **words, int n, int hang) {
    if (n < 3 || directive_count >= MAX_DIRECTIVES) return 0;
    struct directive *d = &directives[directive_count];
    memset(d, 0, sizeof *d);
    d->hang = hang;
    d->gpu = -1;
    d->times = -1;
    copy_str(d->function, words[1]);
    int ok = 1;
    if (hang) {
        char *end;
        d->seconds = strtod(words[2], &end);
        if (end == words[2] || *end) ok = 0;
    } else {
        d->code = number(words[2], &ok);
    }
    for (int i = 3; i < n; i++) {
        char *eq = strchr(words[i], '=');
        if (!eq) return 0;
        *eq = '\0';
        if (!strcmp(words[i], "gpu")) d->gpu = number(eq + 1, &ok);
        else if (!strcmp(words[i], "times")) d->times = number(eq + 1, &ok);
        else if (!strcmp(words[i], "after")) d->after = number(eq + 1, &ok);
        else return 0;
    }
    directive_count++;
    return ok;
}

/* Returns NVML_SUCCESS or the code init must return. Called with the lock held. */
static nvmlReturn_t load_scenario(void) {
    gpu_count = proc_count = directive_count = xid_count = mig_count = gpm_count = 0;
    gettimeofday(&init_time, NULL);
    copy_str(driver_version, "550.54.15");
    cuda_version = 12040;
    init_delay_s = 0;
    const char *path = getenv("MLTOP_FAKE_NVML_SCENARIO");
    if (!path || !*path) {
        fprintf(stderr, "fakenvml: MLTOP_FAKE_NVML_SCENARIO is not set\n");
        return NVML_ERROR_UNKNOWN;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "fakenvml: cannot open scenario %s: %s\n", path, strerror(errno));
        return NVML_ERROR_UNKNOWN;
    }
    char line[4096];
    char *words[64];
    int lineno = 0, init_error = 0, ok = 1;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        int n = split_words(line, words, 64);
        if (n == 0 || words[0][0] == '#') continue;
        const char *kind = words[0];
        if (!strcmp(kind, "init_error") && n == 2) init_error = number(words[1], &ok);
        else if (!strcmp(kind, "driver") && n == 2) copy_str(driver_version, words[1]);
        else if (!strcmp(kind, "cuda") && n == 2) cuda_version = number(words[1], &ok);
        else if (!strcmp(kind, "init_delay") && n == 2) {
            char *end;
            init_delay_s = strtod(words[1], &end);
            ok = end != words[1] && !*end && init_delay_s >= 0;
        }
        else if (!strcmp(kind, "gpu")) ok = parse_gpu(words, n, lineno);
        else if (!strcmp(kind, "proc")) ok = parse_proc(words, n, lineno);
        else if (!strcmp(kind, "xid")) ok = parse_xid(words, n, lineno);
        else if (!strcmp(kind, "gpm")) ok = parse_gpm(words, n, lineno);
        else if (!strcmp(kind, "mig")) ok = parse_mig(words, n, lineno);
        else if (!strcmp(kind, "nvlink")) ok = parse_nvlink(words, n, lineno);
        else if (!strcmp(kind, "fabric")) ok = parse_fabric(words, n, lineno);
        else if (!strcmp(kind, "fail")) ok = parse_directive(words, n, 0);
        else if (!strcmp(kind, "hang")) ok = parse_directive(words, n, 1);
        else ok = 0;
        if (!ok) fprintf(stderr, "fakenvml: %s:%d: cannot parse this line\n", path, lineno);
    }
    fclose(f);
    if (!ok) return NVML_ERROR_UNKNOWN;
    return init_error;
}

/* --------------------------------------------------------------------------- call plumbing */

static void sleep_for(double seconds) {
    struct timespec ts = {(time_t)seconds, (long)((seconds - (time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

/* Apply fail/hang directives for this call. Sleeps without the lock held. */
static nvmlReturn_t directive_for(const char *function, int gpu) {
    double sleep_s = 0;
    nvmlReturn_t code = NVML_SUCCESS;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < directive_count; i++) {
        struct directive *d = &directives[i];
        if (strcmp(d->function, function) || d->times == 0) continue;
        if (d->gpu >= 0 && d->gpu != gpu) continue;
        if (d->after > 0) {
            d->after--;
            continue;
        }
        if (d->times > 0) d->times--;
        if (d->hang) sleep_s += d->seconds;
        else if (code == NVML_SUCCESS) code = d->code;
    }
    pthread_mutex_unlock(&lock);
    if (sleep_s > 0) sleep_for(sleep_s);
    return code;
}

static int initialized(void) {
    pthread_mutex_lock(&lock);
    int n = init_count;
    pthread_mutex_unlock(&lock);
    return n > 0;
}

/* Resolve a handle and apply the init check, directives and GPU loss; *g is set on success. */
static nvmlReturn_t enter_device(const char *function, void *handle, struct fake_gpu **g) {
    if (!initialized()) return NVML_ERROR_UNINITIALIZED;
    struct fake_gpu *gpu = handle;
    if (gpu < gpus || gpu >= gpus + gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = directive_for(function, gpu->index);
    if (r != NVML_SUCCESS) return r;
    if (gpu->lost) return NVML_ERROR_GPU_IS_LOST;
    *g = gpu;
    return NVML_SUCCESS;
}

static nvmlReturn_t enter_system(const char *function) {
    if (!initialized()) return NVML_ERROR_UNINITIALIZED;
    return directive_for(function, -1);
}

static nvmlReturn_t copy_out(char *buf, unsigned int length, const char *value) {
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, value);
    return NVML_SUCCESS;
}

#define DEVICE_ENTRY(fn)                                   \
    struct fake_gpu *g;                                    \
    nvmlReturn_t r_ = enter_device(fn, device, &g);        \
    if (r_ != NVML_SUCCESS) return r_;

/* --------------------------------------------------------------------------- init and system */

static nvmlReturn_t do_init(const char *function) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = load_scenario();
    double delay_s = init_delay_s;
    pthread_mutex_unlock(&lock);
    if (delay_s > 0) sleep_for(delay_s);
    if (r != NVML_SUCCESS) return r;
    r = directive_for(function, -1);
    if (r != NVML_SUCCESS) return r;
    pthread_mutex_lock(&lock);
    init_count++;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit(void) { return do_init("nvmlInit"); }
EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init("nvmlInit_v2"); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return do_init("nvmlInitWithFlags");
}

EXPORT nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&lock);
    nvmlReturn_t r = init_count > 0 ? NVML_SUCCESS : NVML_ERROR_UNINITIALIZED;
    if (init_count > 0) init_count--;
    pthread_mutex_unlock(&lock);
    return r;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    nvmlReturn_t r = enter_system("nvmlSystemGetDriverVersion");
    return r ? r : copy_out(version, length, driver_version);
}

EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    nvmlReturn_t r = enter_system("nvmlSystemGetNVMLVersion");
    char v[STR];
    snprintf(v, sizeof v, "12.%.100s", driver_version);
    return r ? r : copy_out(version, length, v);
}

static nvmlReturn_t cuda_driver_version(const char *function, int *v) {
    nvmlReturn_t r = enter_system(function);
    if (r) return r;
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    *v = cuda_version;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) { return cuda_driver_version("nvmlSystemGetCudaDriverVersion", v); }
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return cuda_driver_version("nvmlSystemGetCudaDriverVersion_v2", v); }

static nvmlReturn_t device_count(const char *function, unsigned int *count) {
    nvmlReturn_t r = enter_system(function);
    if (r) return r;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = gpu_count;
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return device_count("nvmlDeviceGetCount", count); }
EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return device_count("nvmlDeviceGetCount_v2", count); }

static nvmlReturn_t handle_by_index(const char *function, unsigned int index, void **device) {
    if (!initialized()) return NVML_ERROR_UNINITIALIZED;
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned int)gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = directive_for(function, index);
    if (r) return r;
    *device = &gpus[index];
    return NVML_SUCCESS;
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int i, void **d) { return handle_by_index("nvmlDeviceGetHandleByIndex", i, d); }
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **d) { return handle_by_index("nvmlDeviceGetHandleByIndex_v2", i, d); }

/* --------------------------------------------------------------------------- device queries */

EXPORT nvmlReturn_t nvmlDeviceGetIndex(void *device, unsigned int *index) {
    DEVICE_ENTRY("nvmlDeviceGetIndex");
    if (!index) return NVML_ERROR_INVALID_ARGUMENT;
    *index = g->index;
    return NVML_SUCCESS;
}

static struct fake_mig *as_mig(void *device) {
    struct fake_mig *m = device;
    return (m >= migs && m < migs + mig_count) ? m : NULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetUUID(void *device, char *uuid, unsigned int length) {
    if (as_mig(device)) return initialized() ? copy_out(uuid, length, as_mig(device)->uuid) : NVML_ERROR_UNINITIALIZED;
    DEVICE_ENTRY("nvmlDeviceGetUUID");
    return copy_out(uuid, length, g->uuid);
}

EXPORT nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    struct fake_mig *mig = as_mig(device);
    if (mig) {
        char full[2 * STR + 8];
        snprintf(full, sizeof full, "%s MIG %s", gpus[mig->gpu].name, mig->profile[0] ? mig->profile : "1g.10gb");
        return initialized() ? copy_out(name, length, full) : NVML_ERROR_UNINITIALIZED;
    }
    DEVICE_ENTRY("nvmlDeviceGetName");
    return copy_out(name, length, g->name);
}

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(void *device, nvmlUtilization_t *u) {
    DEVICE_ENTRY("nvmlDeviceGetUtilizationRates");
    if (!u) return NVML_ERROR_INVALID_ARGUMENT;
    u->gpu = seq_value(g, &g->util_s, g->util);
    u->memory = seq_value(g, &g->mem_util_s, g->mem_util);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *m) {
    struct fake_mig *mig = as_mig(device);
    if (mig && m) {
        m->total = mig->mem_total;
        m->used = mig->mem_used;
        m->free = mig->mem_total > mig->mem_used ? mig->mem_total - mig->mem_used : 0;
        return NVML_SUCCESS;
    }
    DEVICE_ENTRY("nvmlDeviceGetMemoryInfo");
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long used = seq_value(g, &g->mem_used_s, g->mem_used);
    m->total = g->mem_total;
    m->used = used;
    m->free = g->mem_total > used ? g->mem_total - used : 0;
    return NVML_SUCCESS;
}

#ifndef MLTOP_FAKE_OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *device, nvmlMemory_v2_t *m) {
    if (as_mig(device)) return NVML_ERROR_NOT_SUPPORTED; /* callers fall back to nvmlDeviceGetMemoryInfo */
    DEVICE_ENTRY("nvmlDeviceGetMemoryInfo_v2");
    if (!m) return NVML_ERROR_INVALID_ARGUMENT;
    if (m->version != NVML_MEMORY_V2_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    m->total = g->mem_total;
    m->reserved = 0;
    unsigned long long used = seq_value(g, &g->mem_used_s, g->mem_used);
    m->used = used;
    m->free = g->mem_total > used ? g->mem_total - used : 0;
    return NVML_SUCCESS;
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(void *device, unsigned int sensor, unsigned int *temp) {
    DEVICE_ENTRY("nvmlDeviceGetTemperature");
    if (!temp || sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = seq_value(g, &g->temp_s, g->temp);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(void *device, unsigned int *power) {
    DEVICE_ENTRY("nvmlDeviceGetPowerUsage");
    if (!power) return NVML_ERROR_INVALID_ARGUMENT;
    *power = seq_value(g, &g->power_s, g->power_mw);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(void *device, unsigned int *limit) {
    DEVICE_ENTRY("nvmlDeviceGetEnforcedPowerLimit");
    if (!limit) return NVML_ERROR_INVALID_ARGUMENT;
    *limit = g->power_limit_mw;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(void *device, unsigned int *limit) {
    DEVICE_ENTRY("nvmlDeviceGetPowerManagementLimit");
    if (!limit) return NVML_ERROR_INVALID_ARGUMENT;
    *limit = g->power_limit_mw;
    return NVML_SUCCESS;
}

#ifndef MLTOP_FAKE_OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *device, unsigned long long *reasons) {
    DEVICE_ENTRY("nvmlDeviceGetCurrentClocksEventReasons");
    if (!reasons) return NVML_ERROR_INVALID_ARGUMENT;
    *reasons = g->clocks_event;
    return NVML_SUCCESS;
}
#endif

EXPORT nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(void *device, unsigned long long *reasons) {
    DEVICE_ENTRY("nvmlDeviceGetCurrentClocksThrottleReasons");
    if (!reasons) return NVML_ERROR_INVALID_ARGUMENT;
    *reasons = g->clocks_event;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(void *device, unsigned int *mode) {
    DEVICE_ENTRY("nvmlDeviceGetPersistenceMode");
    if (!mode) return NVML_ERROR_INVALID_ARGUMENT;
    *mode = g->persistence;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(void *device, nvmlPciInfo_t *pci) {
    DEVICE_ENTRY("nvmlDeviceGetPciInfo_v3");
    if (!pci) return NVML_ERROR_INVALID_ARGUMENT;
    memset(pci, 0, sizeof *pci);
    unsigned int domain = 0, bus = 0, dev = 0, fn = 0;
    sscanf(g->pci, "%x:%x:%x.%x", &domain, &bus, &dev, &fn);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = 0x233010de;
    pci->pciSubSystemId = 0x16c110de;
    snprintf(pci->busId, sizeof pci->busId, "%.31s", g->pci);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04x:%02x:%02x.%x", domain & 0xffff, bus, dev, fn);
    return NVML_SUCCESS;
}

static int pid_runs(unsigned int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *close = strrchr(buf, ')');
    return close && close[1] == ' ' && close[2] != 'Z' && close[2] != 'X';
}

static int proc_on(const struct fake_proc *p, int gpu, const struct fake_mig *mig, int graphics) {
    if (p->graphics != graphics) return 0;
    if (p->alive && !pid_runs(p->pid)) return 0;
    if (mig) return p->gpu == mig->gpu && p->mig == mig->index;
    return p->gpu == gpu;
}

static nvmlReturn_t running_processes(const char *function, void *device, int graphics, unsigned int *count,
                                      nvmlProcessInfo_t *infos) {
    struct fake_mig *mig = as_mig(device);
    struct fake_gpu *g = mig ? &gpus[mig->gpu] : NULL;
    if (!mig) {
        nvmlReturn_t r_ = enter_device(function, device, &g);
        if (r_ != NVML_SUCCESS) return r_;
    }
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = 0;
    for (int i = 0; i < proc_count; i++)
        if (proc_on(&procs[i], g->index, mig, graphics)) n++;
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (!infos || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned int k = 0;
    for (int i = 0; i < proc_count; i++) {
        if (!proc_on(&procs[i], g->index, mig, graphics)) continue;
        infos[k].pid = procs[i].pid;
        infos[k].usedGpuMemory = procs[i].mem;
        infos[k].gpuInstanceId = 0xFFFFFFFFu;
        infos[k].computeInstanceId = 0xFFFFFFFFu;
        for (int j = 0; j < mig_count; j++) {
            if (procs[i].mig >= 0 && migs[j].gpu == procs[i].gpu && migs[j].index == procs[i].mig) {
                infos[k].gpuInstanceId = migs[j].gi;
                infos[k].computeInstanceId = migs[j].ci;
            }
        }
        k++;
    }
    *count = n;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetComputeRunningProcesses_v2", device, 0, count, infos);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetGraphicsRunningProcesses_v2", device, 1, count, infos);
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v2(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetMPSComputeRunningProcesses_v2", device, 2, count, infos);
}
#ifndef MLTOP_FAKE_OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetComputeRunningProcesses_v3", device, 0, count, infos);
}
EXPORT nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetGraphicsRunningProcesses_v3", device, 1, count, infos);
}
EXPORT nvmlReturn_t nvmlDeviceGetMPSComputeRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running_processes("nvmlDeviceGetMPSComputeRunningProcesses_v3", device, 2, count, infos);
}

static unsigned long long wall_clock_us(void) {
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (unsigned long long)tv.tv_sec * 1000000ULL + tv.tv_usec;
}

EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(void *device, nvmlProcessUtilizationSample_t *samples,
                                                    unsigned int *count, unsigned long long lastSeenTimeStamp) {
    DEVICE_ENTRY("nvmlDeviceGetProcessUtilization");
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long now = g->util_ts ? g->util_ts : wall_clock_us();
    nvmlProcessUtilizationSample_t found[2 * MAX_PROCS];
    unsigned int n = 0;
    for (int i = 0; i < proc_count; i++) {
        struct fake_proc *p = &procs[i];
        if (p->gpu != g->index) continue;
        if (p->has_sm_prev && now > 1000000ULL && now - 1000000ULL > lastSeenTimeStamp) {
            found[n] = (nvmlProcessUtilizationSample_t){p->pid, now - 1000000ULL, p->sm_prev, 0, 0, 0};
            n++;
        }
        if (p->sm > 0 && now > lastSeenTimeStamp) {
            found[n] = (nvmlProcessUtilizationSample_t){p->pid, now, p->sm, 0, 0, 0};
            n++;
        }
    }
    if (n == 0) return NVML_ERROR_NOT_FOUND;
    if (!samples || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(samples, found, n * sizeof *samples);
    *count = n;
    return NVML_SUCCESS;
}
#endif

/* --------------------------------------------------------------------------- health */

/* The value of a health field now, or NOT_SUPPORTED when the scenario does not set it. */
static nvmlReturn_t health(struct fake_gpu *g, int field, unsigned long long *out) {
    if (g->health[field].n == 0) return NVML_ERROR_NOT_SUPPORTED;
    *out = seq_value(g, &g->health[field], 0);
    return NVML_SUCCESS;
}

#define HEALTH_UINT(fn, field)                                         \
    EXPORT nvmlReturn_t fn(void *device, unsigned int *value) {        \
        DEVICE_ENTRY(#fn);                                             \
        if (!value) return NVML_ERROR_INVALID_ARGUMENT;                \
        unsigned long long v;                                          \
        nvmlReturn_t r = health(g, field, &v);                         \
        if (r == NVML_SUCCESS) *value = (unsigned int)v;               \
        return r;                                                      \
    }

HEALTH_UINT(nvmlDeviceGetPerformanceState, HF_PSTATE)
HEALTH_UINT(nvmlDeviceGetFanSpeed, HF_FAN)
HEALTH_UINT(nvmlDeviceGetRetiredPagesPendingStatus, HF_RETIRED_PENDING)
HEALTH_UINT(nvmlDeviceGetCurrPcieLinkGeneration, HF_PCIE_GEN)
HEALTH_UINT(nvmlDeviceGetMaxPcieLinkGeneration, HF_PCIE_GEN_MAX)
HEALTH_UINT(nvmlDeviceGetCurrPcieLinkWidth, HF_PCIE_WIDTH)
HEALTH_UINT(nvmlDeviceGetMaxPcieLinkWidth, HF_PCIE_WIDTH_MAX)
HEALTH_UINT(nvmlDeviceGetComputeMode, HF_COMPUTE_MODE)

static nvmlReturn_t clock_of(const char *function, void *device, unsigned int type, unsigned int *clock, int max) {
    DEVICE_ENTRY(function);
    if (!clock) return NVML_ERROR_INVALID_ARGUMENT;
    int field;
    if (type == 1) field = max ? HF_SM_CLOCK_MAX : HF_SM_CLOCK; /* NVML_CLOCK_SM */
    else if (type == 2) field = max ? HF_MEM_CLOCK_MAX : HF_MEM_CLOCK; /* NVML_CLOCK_MEM */
    else return NVML_ERROR_NOT_SUPPORTED;
    unsigned long long v;
    nvmlReturn_t r = health(g, field, &v);
    if (r == NVML_SUCCESS) *clock = (unsigned int)v;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(void *device, unsigned int type, unsigned int *clock) {
    return clock_of("nvmlDeviceGetClockInfo", device, type, clock, 0);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(void *device, unsigned int type, unsigned int *clock) {
    return clock_of("nvmlDeviceGetMaxClockInfo", device, type, clock, 1);
}

static nvmlReturn_t mode_pair(struct fake_gpu *g, int field, unsigned int *current, unsigned int *pending) {
    if (!current || !pending) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long v;
    nvmlReturn_t r = health(g, field, &v);
    if (r == NVML_SUCCESS) *current = *pending = (unsigned int)v;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetEccMode(void *device, unsigned int *current, unsigned int *pending) {
    DEVICE_ENTRY("nvmlDeviceGetEccMode");
    return mode_pair(g, HF_ECC_MODE, current, pending);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(void *device, unsigned int *current, unsigned int *pending) {
    DEVICE_ENTRY("nvmlDeviceGetMigMode");
    return mode_pair(g, HF_MIG_MODE, current, pending);
}

/* errorType 0 corrected, 1 uncorrected; counterType 0 volatile, 1 aggregate (nvml.h). */
EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *device, unsigned int errorType, unsigned int counterType,
                                                unsigned long long *count) {
    DEVICE_ENTRY("nvmlDeviceGetTotalEccErrors");
    if (!count || errorType > 1 || counterType > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long mode;
    if (health(g, HF_ECC_MODE, &mode) != NVML_SUCCESS || !mode) return NVML_ERROR_NOT_SUPPORTED;
    static const int fields[2][2] = {{HF_ECC_VOL_CORR, HF_ECC_AGG_CORR}, {HF_ECC_VOL_UNC, HF_ECC_AGG_UNC}};
    unsigned long long v;
    nvmlReturn_t r = health(g, fields[errorType][counterType], &v);
    *count = r == NVML_SUCCESS ? v : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(void *device, unsigned int *corr, unsigned int *unc,
                                              unsigned int *pending, unsigned int *failed) {
    DEVICE_ENTRY("nvmlDeviceGetRemappedRows");
    if (!corr || !unc || !pending || !failed) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long v[4];
    const int fields[4] = {HF_REMAP_CORR, HF_REMAP_UNC, HF_REMAP_PENDING, HF_REMAP_FAILED};
    int any = 0;
    for (int i = 0; i < 4; i++) {
        v[i] = 0;
        if (health(g, fields[i], &v[i]) == NVML_SUCCESS) any = 1;
    }
    if (!any) return NVML_ERROR_NOT_SUPPORTED;
    *corr = v[0];
    *unc = v[1];
    *pending = v[2];
    *failed = v[3];
    return NVML_SUCCESS;
}

/* counter 0 TX, 1 RX, in KB/s. */
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(void *device, unsigned int counter, unsigned int *value) {
    DEVICE_ENTRY("nvmlDeviceGetPcieThroughput");
    if (!value || counter > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long v;
    nvmlReturn_t r = health(g, counter == 0 ? HF_PCIE_TX_KBS : HF_PCIE_RX_KBS, &v);
    if (r == NVML_SUCCESS) *value = (unsigned int)v;
    return r;
}

static nvmlReturn_t codec(struct fake_gpu *g, int field, unsigned int *util, unsigned int *period) {
    if (!util || !period) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long v;
    nvmlReturn_t r = health(g, field, &v);
    if (r == NVML_SUCCESS) {
        *util = (unsigned int)v;
        *period = 1000000;
    }
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(void *device, unsigned int *util, unsigned int *period) {
    DEVICE_ENTRY("nvmlDeviceGetEncoderUtilization");
    return codec(g, HF_ENC, util, period);
}

EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(void *device, unsigned int *util, unsigned int *period) {
    DEVICE_ENTRY("nvmlDeviceGetDecoderUtilization");
    return codec(g, HF_DEC, util, period);
}

/* --------------------------------------------------------------------------- NVLink and the fabric */

static nvmlReturn_t nvlink_of(struct fake_gpu *g, unsigned int link) {
    if (g->nvlinks == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)g->nvlinks) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(void *device, unsigned int link, unsigned int *isActive) {
    DEVICE_ENTRY("nvmlDeviceGetNvLinkState");
    if (!isActive) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = nvlink_of(g, link);
    if (r == NVML_SUCCESS) *isActive = g->nvlink_state[link] ? 1 : 0;
    return r;
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(void *device, unsigned int link, unsigned int counter,
                                                    unsigned long long *value) {
    DEVICE_ENTRY("nvmlDeviceGetNvLinkErrorCounter");
    if (!value || counter > 3) return NVML_ERROR_INVALID_ARGUMENT;
    nvmlReturn_t r = nvlink_of(g, link);
    if (r == NVML_SUCCESS) *value = seq_value(g, &g->nvlink_errors[link][counter], 0);
    return r;
}

/* nvmlGpuFabricInfo_t (deprecated call) and nvmlGpuFabricInfo_v2_t/_v3_t (nvmlDeviceGetGpuFabricInfoV). */
typedef struct {
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
} nvmlGpuFabricInfo_t;

typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
    unsigned int healthMask;
} nvmlGpuFabricInfo_v2_t;

static void cluster_uuid(struct fake_gpu *g, unsigned char *uuid) {
    for (int i = 0; i < 16; i++) uuid[i] = (unsigned char)(g->fabric_clique + i);
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuFabricInfo(void *device, nvmlGpuFabricInfo_t *info) {
    DEVICE_ENTRY("nvmlDeviceGetGpuFabricInfo");
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->has_fabric) return NVML_ERROR_NOT_SUPPORTED;
    cluster_uuid(g, info->clusterUuid);
    info->status = g->fabric_status;
    info->cliqueId = g->fabric_clique;
    info->state = g->fabric_state;
    return NVML_SUCCESS;
}

#ifndef MLTOP_FAKE_OLD_DRIVER
EXPORT nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(void *device, nvmlGpuFabricInfo_v2_t *info) {
    DEVICE_ENTRY("nvmlDeviceGetGpuFabricInfoV");
    if (!info) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int v = info->version >> 24, size = info->version & 0xffffff;
    if (v < 1 || v > 3 || size < sizeof(nvmlGpuFabricInfo_v2_t) - (v == 1 ? 4 : 0))
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (!g->has_fabric) return NVML_ERROR_NOT_SUPPORTED;
    cluster_uuid(g, info->clusterUuid);
    info->status = g->fabric_status;
    info->cliqueId = g->fabric_clique;
    info->state = g->fabric_state;
    if (v >= 2) info->healthMask = g->fabric_health;
    return NVML_SUCCESS;
}
#endif

/* --------------------------------------------------------------------------- events (Xid) */

EXPORT nvmlReturn_t nvmlEventSetCreate(void **set) {
    nvmlReturn_t r = enter_system("nvmlEventSetCreate");
    if (r != NVML_SUCCESS) return r;
    if (!set) return NVML_ERROR_INVALID_ARGUMENT;
    *set = &event_set_token;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(void *device, unsigned long long types, void *set) {
    DEVICE_ENTRY("nvmlDeviceRegisterEvents");
    if (set != &event_set_token) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    g->events |= types;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(void *set, nvmlEventData_t *data, unsigned int timeoutms) {
    nvmlReturn_t r = enter_system("nvmlEventSetWait_v2");
    if (r != NVML_SUCCESS) return r;
    if (set != &event_set_token || !data) return NVML_ERROR_INVALID_ARGUMENT;
    double elapsed_s = ms_since_init() / 1000.0;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < xid_count; i++) {
        struct xid_event *x = &xids[i];
        if (x->delivered || x->at_s > elapsed_s || !(gpus[x->gpu].events & NVML_EVENT_TYPE_XID)) continue;
        x->delivered = 1;
        data->device = &gpus[x->gpu];
        data->eventType = NVML_EVENT_TYPE_XID;
        data->eventData = x->code;
        data->gpuInstanceId = data->computeInstanceId = 0xFFFFFFFFu;
        pthread_mutex_unlock(&lock);
        return NVML_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    if (timeoutms) {
        struct timespec ts = {timeoutms / 1000, (long)(timeoutms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
        }
    }
    return NVML_ERROR_TIMEOUT;
}

EXPORT nvmlReturn_t nvmlEventSetWait(void *set, nvmlEventData_t *data, unsigned int timeoutms) {
    return nvmlEventSetWait_v2(set, data, timeoutms);
}

EXPORT nvmlReturn_t nvmlEventSetFree(void *set) {
    if (set != &event_set_token) return NVML_ERROR_INVALID_ARGUMENT;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < gpu_count; i++) gpus[i].events = 0;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

/* --------------------------------------------------------------------------- MIG */

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(void *device, unsigned int *count) {
    DEVICE_ENTRY("nvmlDeviceGetMaxMigDeviceCount");
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned long long mode;
    if (health(g, HF_MIG_MODE, &mode) != NVML_SUCCESS) return NVML_ERROR_NOT_SUPPORTED;
    *count = 7;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(void *device, unsigned int index, void **mig) {
    DEVICE_ENTRY("nvmlDeviceGetMigDeviceHandleByIndex");
    if (!mig) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < mig_count; i++) {
        if (migs[i].gpu == g->index && migs[i].index == (int)index) {
            *mig = &migs[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlDeviceGetGpuInstanceId(void *device, unsigned int *id) {
    struct fake_mig *m = as_mig(device);
    if (!m || !id) return NVML_ERROR_INVALID_ARGUMENT;
    *id = m->gi;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeInstanceId(void *device, unsigned int *id) {
    struct fake_mig *m = as_mig(device);
    if (!m || !id) return NVML_ERROR_INVALID_ARGUMENT;
    *id = m->ci;
    return NVML_SUCCESS;
}

/* --------------------------------------------------------------------------- GPM (GPU Performance Metrics) */

#ifndef MLTOP_FAKE_OLD_DRIVER
typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;

typedef struct {
    char *shortName;
    char *longName;
    char *unit;
} nvmlGpmMetricInfo_t;

typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    nvmlGpmMetricInfo_t metricInfo;
} nvmlGpmMetric_t;

#define GPM_METRIC_MAX 477 /* NVML_GPM_METRIC_MAX of the nvidia-ml-py in use: the callers' array size */
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    void *sample1;
    void *sample2;
    nvmlGpmMetric_t metrics[GPM_METRIC_MAX];
} nvmlGpmMetricsGet_t;

#define GPM_SAMPLE_MAGIC 0x47504d53u
struct fake_gpm_sample {
    unsigned int magic;
    int filled;
    int gpu, gi;
    double t_ms; /* since init */
};
static int gpm_live_samples;

static double ms_since_init_exact(void) {
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - init_time.tv_sec) * 1000.0 + (now.tv_usec - init_time.tv_usec) / 1000.0;
}

/* The integral of a metric's stepped value from init to t (ms). */
static double gpm_integral(const struct gpm_metric *m, double step, double t) {
    if (t <= 0) return 0;
    long long steps = (long long)(t / step);
    double cycle = 0;
    for (int i = 0; i < m->n; i++) cycle += m->v[i];
    double sum = (double)(steps / m->n) * cycle * step;
    int rem = (int)(steps % m->n);
    for (int i = 0; i < rem; i++) sum += m->v[i] * step;
    return sum + m->v[rem] * (t - steps * step);
}

static const char *gpm_unit(unsigned int id) {
    return ((id >= 20 && id <= 21) || (id >= 60 && id <= 159)) ? "MiB/s" : "%";
}

EXPORT int fakenvmlGpmLiveSamples(void) { return gpm_live_samples; }

EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(void *device, nvmlGpmSupport_t *support) {
    DEVICE_ENTRY("nvmlGpmQueryDeviceSupport");
    if (!support) return NVML_ERROR_INVALID_ARGUMENT;
    if (support->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    support->isSupportedDevice = g->gpm ? 1 : 0;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleAlloc(void **sample) {
    nvmlReturn_t r = enter_system("nvmlGpmSampleAlloc");
    if (r) return r;
    if (!sample) return NVML_ERROR_INVALID_ARGUMENT;
    struct fake_gpm_sample *s = calloc(1, sizeof *s);
    if (!s) return NVML_ERROR_UNKNOWN;
    s->magic = GPM_SAMPLE_MAGIC;
    pthread_mutex_lock(&lock);
    gpm_live_samples++;
    pthread_mutex_unlock(&lock);
    *sample = s;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleFree(void *sample) {
    struct fake_gpm_sample *s = sample;
    if (!s || s->magic != GPM_SAMPLE_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    s->magic = 0;
    free(s);
    pthread_mutex_lock(&lock);
    gpm_live_samples--;
    pthread_mutex_unlock(&lock);
    return NVML_SUCCESS;
}

static nvmlReturn_t gpm_take(struct fake_gpu *g, int gi, void *sample) {
    struct fake_gpm_sample *s = sample;
    if (!s || s->magic != GPM_SAMPLE_MAGIC) return NVML_ERROR_INVALID_ARGUMENT;
    if (!g->gpm) return NVML_ERROR_NOT_SUPPORTED;
    s->gpu = g->index;
    s->gi = gi;
    s->t_ms = ms_since_init_exact();
    s->filled = 1;
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlGpmSampleGet(void *device, void *sample) {
    DEVICE_ENTRY("nvmlGpmSampleGet");
    return gpm_take(g, -1, sample);
}

EXPORT nvmlReturn_t nvmlGpmMigSampleGet(void *device, unsigned int gpuInstanceId, void *sample) {
    DEVICE_ENTRY("nvmlGpmMigSampleGet");
    if (!g->gpm) return NVML_ERROR_NOT_SUPPORTED;
    unsigned long long mode;
    if (health(g, HF_MIG_MODE, &mode) != NVML_SUCCESS || !mode) return NVML_ERROR_NOT_SUPPORTED;
    for (int i = 0; i < mig_count; i++)
        if (migs[i].gpu == g->index && migs[i].gi == gpuInstanceId) return gpm_take(g, (int)gpuInstanceId, sample);
    return NVML_ERROR_NOT_FOUND;
}

EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *request) {
    if (!initialized()) return NVML_ERROR_UNINITIALIZED;
    if (!request) return NVML_ERROR_INVALID_ARGUMENT;
    if (request->version != 1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    struct fake_gpm_sample *a = request->sample1, *b = request->sample2;
    if (!a || !b || a->magic != GPM_SAMPLE_MAGIC || b->magic != GPM_SAMPLE_MAGIC || !a->filled || !b->filled)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (a->gpu != b->gpu || a->gi != b->gi || b->t_ms <= a->t_ms || request->numMetrics > GPM_METRIC_MAX)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (a->gpu >= gpu_count) return NVML_ERROR_INVALID_ARGUMENT; /* a sample from before a re-init */
    nvmlReturn_t r = directive_for("nvmlGpmMetricsGet", a->gpu);
    if (r) return r;
    struct fake_gpu *g = &gpus[a->gpu];
    double step = g->step_ms ? (double)g->step_ms : 1000.0;
    for (unsigned int i = 0; i < request->numMetrics; i++) {
        nvmlGpmMetric_t *out = &request->metrics[i];
        out->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        out->value = 0;
        out->metricInfo.shortName = out->metricInfo.longName = NULL;
        out->metricInfo.unit = (char *)gpm_unit(out->metricId);
        for (int k = 0; k < gpm_count; k++) {
            const struct gpm_metric *m = &gpm_metrics[k];
            if (m->gpu != a->gpu || m->gi != a->gi || m->id != out->metricId) continue;
            out->value = m->n == 1 ? m->v[0]  /* exact, as a steady counter rate is */
                         : (gpm_integral(m, step, b->t_ms) - gpm_integral(m, step, a->t_ms)) / (b->t_ms - a->t_ms);
            out->nvmlReturn = NVML_SUCCESS;
        }
    }
    return NVML_SUCCESS;
}
#endif
