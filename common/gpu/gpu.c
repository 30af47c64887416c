#include "common/gpu/gpu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/gpu/cuda_check.h"
#include "common/core/gpu_arch.h"
#include "common/core/half.h"
#include "common/gpu/gpu_probe.h"

static char unavailable_reason[256];

// The device files an NVIDIA driver creates (/dev/nvidia0.., /dev/nvidiactl; /dev/dxg under
// WSL). Without them there is no GPU to talk to, whatever CUDA's error says.
static int nvidia_device_files_present(void) {
    return access("/dev/nvidiactl", F_OK) == 0 || access("/dev/nvidia0", F_OK) == 0 || access("/dev/dxg", F_OK) == 0;
}

int gpu_count(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        // With no driver at all, the runtime reports cudaErrorInsufficientDriver ("CUDA driver
        // version is insufficient for CUDA runtime version"): true, but it sends a learner on a
        // machine without a GPU looking for a driver update. Say what is the case.
        const int no_gpu = (err == cudaErrorInsufficientDriver || err == cudaErrorNoDevice) &&
                           !nvidia_device_files_present();
        snprintf(unavailable_reason, sizeof unavailable_reason, "%s",
                 no_gpu ? "no GPU (no NVIDIA driver / device found)" : cudaGetErrorString(err));
        cudaGetLastError();  // clear the sticky error
        return 0;
    }
    if (n == 0) snprintf(unavailable_reason, sizeof unavailable_reason, "no GPU (no NVIDIA driver / device found)");
    return n;
}

const char *gpu_unavailable_reason(void) { return unavailable_reason; }

static struct cudaDeviceProp device_props;
static int selected_device = -1;
static char description[400];
static int effective_cc, cc_simulated;
static int code_arch, code_sm90a;
static char code_description[160];

void gpu_require_valid_switches(void) {
    const char *sim = getenv("GPU_SIMULATE_CC");
    if (sim && *sim && gpu_arch_parse_cc(sim) < 0)
        fail_user("GPU_SIMULATE_CC=%s: expected a compute capability such as 8.0, 8.6 or 8.9", sim);
}

// The compute capability GPU_SIMULATE_CC asks for, checked against the device's own.
static int simulated_cc(int device_cc) {
    const char *sim = getenv("GPU_SIMULATE_CC");
    if (!sim || !*sim) return device_cc;
    int cc = gpu_arch_parse_cc(sim);
    if (cc < 0)
        fail_user("GPU_SIMULATE_CC=%s: expected a compute capability such as 8.0, 8.6 or 8.9", sim);
    if (cc > device_cc)
        fail_user("GPU_SIMULATE_CC=%s: a GPU can only be made to act as an older one, and this %s is %d.%d",
                  sim, device_props.name, device_cc / 10, device_cc % 10);
    return cc;
}

// Runs the probe kernel: does this binary hold code for the device, and which?
static void probe_code(void) {
    const char *archs = gpu_probe_build_archs();
    cudaError_t err = (cudaError_t)gpu_probe_code(&code_arch, &code_sm90a);
    if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidKernelImage ||
        err == cudaErrorUnsupportedPtxVersion || err == cudaErrorInvalidPtx || err == cudaErrorJitCompilerNotFound) {
        int driver = 0;
        cudaDriverGetVersion(&driver);
        fail_user("this binary holds no GPU code that this %s (compute capability %d.%d) can run: it was built "
                  "for CUDA_ARCHS=%s with CUDA %d.%d, and the driver supports CUDA %d.%d (%s). Build for this GPU "
                  "with the default CUDA_ARCHS (.bazelrc) or `bazel build $(tools/cuda_archs.sh) //...`",
                  device_props.name, device_props.major, device_props.minor, archs, CUDART_VERSION / 1000,
                  CUDART_VERSION % 1000 / 10, driver / 1000, driver % 1000 / 10, cudaGetErrorString(err));
    }
    if (err != cudaSuccess)
        fail_user("the first kernel launch on this %s failed: %s (%s)", device_props.name, cudaGetErrorName(err),
                  cudaGetErrorString(err));
    char image[32];
    GpuCodeKind kind = gpu_arch_code_for(archs, gpu_compute_capability(), image, sizeof image);
    if (kind != GPU_CODE_NONE && atoi(image + strcspn(image, "0123456789")) == code_arch / 10)
        snprintf(code_description, sizeof code_description, "%s %s (built for %s)", image,
                 kind == GPU_CODE_PTX ? "PTX, JIT-compiled by the driver" : "machine code", archs);
    else  // the driver chose otherwise than gpu_arch_code_for expects: the probe's word is final
        snprintf(code_description, sizeof code_description, "code compiled for %d.%d (built for %s)",
                 code_arch / 100, code_arch % 100 / 10, archs);
}

void gpu_select(int device) {
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaGetDeviceProperties(&device_props, device));
    selected_device = device;
    const int own = gpu_compute_capability();
    effective_cc = simulated_cc(own);
    cc_simulated = effective_cc != own;
    int n = snprintf(description, sizeof description, "%s, compute capability %d.%d", device_props.name,
                     device_props.major, device_props.minor);
    if (cc_simulated && n > 0 && (size_t)n < sizeof description)
        snprintf(description + n, sizeof description - (size_t)n, ", acting as %d.%d (GPU_SIMULATE_CC)",
                 effective_cc / 10, effective_cc % 10);
    gpu_require_cc("this program", GPU_ARCH_MIN);  // before the probe: a T4 hears what it lacks
    probe_code();
}

void gpu_require_device(int device) {
    int n = gpu_count();
    if (n == 0)
        fail_user("this program needs a CUDA GPU, and none is usable here: %s", gpu_unavailable_reason());
    if (device < 0 || device >= n)
        fail_user("GPU %d was asked for, but this machine has %d usable GPU%s (0..%d)", device, n,
                  n == 1 ? "" : "s", n - 1);
    gpu_select(device);
}

void gpu_require(void) { gpu_require_device(0); }

// Every query works on the selected device; a program that set one itself (step 07's ranks)
// gets the current one selected, and checked, on first use.
static void ensure_selected(void) {
    if (selected_device >= 0) return;
    int device;
    CUDA_CHECK(cudaGetDevice(&device));
    gpu_select(device);
}

const char *gpu_description(void) {
    ensure_selected();
    return description;
}

int gpu_compute_capability(void) {
    if (selected_device < 0) ensure_selected();
    return device_props.major * 10 + device_props.minor;
}

int gpu_effective_cc(void) {
    ensure_selected();
    return effective_cc;
}

int gpu_cc_is_simulated(void) {
    ensure_selected();
    return cc_simulated;
}

size_t gpu_max_smem_per_block(void) {
    ensure_selected();
    size_t device = device_props.sharedMemPerBlockOptin;
    size_t generation = gpu_arch_max_smem_per_block(effective_cc);
    return generation < device ? generation : device;
}

const char *gpu_refusal(const char *what, int min_cc) {
    static char sentence[512];
    ensure_selected();
    char name[320];
    if (cc_simulated) snprintf(name, sizeof name, "%s (GPU_SIMULATE_CC=%d.%d)", device_props.name,
                               effective_cc / 10, effective_cc % 10);
    else snprintf(name, sizeof name, "%s", device_props.name);
    return gpu_arch_refusal(effective_cc, name, what, min_cc, sentence, sizeof sentence);
}

void gpu_require_cc(const char *what, int min_cc) {
    const char *why = gpu_refusal(what, min_cc);
    if (why) fail_user("%s", why);
}

int gpu_code_arch(void) {
    ensure_selected();
    return code_arch;
}

int gpu_code_has_sm90a(void) {
    ensure_selected();
    return code_sm90a;
}

const char *gpu_code_description(void) {
    ensure_selected();
    return code_description;
}

// ---- counted device memory --------------------------------------------------------------
// A small table of live allocations is enough: steps make a few dozen of them.
typedef struct {
    void *ptr;
    size_t bytes;
    const DevAllocator *by;  // NULL: cudaMalloc
} Allocation;

static Allocation *allocations;
static size_t num_allocations, cap_allocations;
static size_t bytes_in_use, peak_bytes;
static const DevAllocator *allocator;  // dev_alloc's, when not cudaMalloc

const DevAllocator *dev_set_allocator(const DevAllocator *a) {
    const DevAllocator *before = allocator;
    allocator = a;
    return before;
}

void *dev_alloc(size_t bytes) {
    void *p = NULL;
    if (allocator) {
        char why[256] = "";
        p = allocator->alloc(bytes ? bytes : 1, why, sizeof why);
        if (!p)
            DIE("%s of %.1f MiB failed (%s); %.1f MiB already in use by this program", allocator->name,
                bytes / 1048576.0, why, bytes_in_use / 1048576.0);
    } else {
        cudaError_t err = cudaMalloc(&p, bytes ? bytes : 1);
        if (err != cudaSuccess)
            DIE("cudaMalloc of %.1f MiB failed (%s); %.1f MiB already in use by this program",
                bytes / 1048576.0, cudaGetErrorString(err), bytes_in_use / 1048576.0);
    }
    if (num_allocations == cap_allocations) {
        cap_allocations = cap_allocations ? 2 * cap_allocations : 64;
        allocations = realloc(allocations, cap_allocations * sizeof *allocations);
        if (!allocations) DIE("out of host memory");
    }
    allocations[num_allocations++] = (Allocation){p, bytes, allocator};
    bytes_in_use += bytes;
    if (bytes_in_use > peak_bytes) peak_bytes = bytes_in_use;
    return p;
}

int dev_find_allocation(const void *ptr, void **base, size_t *bytes, const DevAllocator **by) {
    const char *p = ptr;
    for (size_t i = 0; i < num_allocations; i++) {
        const Allocation *a = &allocations[i];
        if (p >= (const char *)a->ptr && p < (const char *)a->ptr + (a->bytes ? a->bytes : 1)) {
            if (base) *base = a->ptr;
            if (bytes) *bytes = a->bytes;
            if (by) *by = a->by;
            return 1;
        }
    }
    return 0;
}

void dev_free_all(void *const *ptrs, size_t n) {
    for (size_t i = 0; i < n; i++) dev_free(ptrs[i]);
}

void dev_free(void *ptr) {
    if (!ptr) return;
    for (size_t i = 0; i < num_allocations; i++) {
        if (allocations[i].ptr == ptr) {
            const DevAllocator *by = allocations[i].by;
            bytes_in_use -= allocations[i].bytes;
            allocations[i] = allocations[--num_allocations];
            if (by) by->free(ptr);
            else CUDA_CHECK(cudaFree(ptr));
            return;
        }
    }
    DIE("dev_free of a pointer that dev_alloc did not return");
}

size_t dev_bytes_in_use(void) { return bytes_in_use; }
size_t dev_peak_bytes(void) { return peak_bytes; }
void dev_reset_peak(void) { peak_bytes = bytes_in_use; }

// ---- transfers with conversion -----------------------------------------------------------
void dev_upload_to(void *dev, const float *host, int64_t n, DType dtype) {
    uint16_t *tmp = xmalloc((size_t)n * sizeof(uint16_t));
    for (int64_t i = 0; i < n; i++)
        tmp[i] = dtype == DTYPE_BF16 ? float_to_bf16(host[i]) : float_to_fp16(host[i]);
    CUDA_CHECK(cudaMemcpy(dev, tmp, (size_t)n * sizeof(uint16_t), cudaMemcpyHostToDevice));
    free(tmp);
}

void *dev_upload(const float *host, int64_t n, DType dtype) {
    void *dev = dev_alloc((size_t)n * dtype_bytes(dtype));
    dev_upload_to(dev, host, n, dtype);
    return dev;
}

void dev_download(float *host, const void *dev, int64_t n, DType dtype) {
    uint16_t *tmp = xmalloc((size_t)n * sizeof(uint16_t));
    CUDA_CHECK(cudaMemcpy(tmp, dev, (size_t)n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < n; i++)
        host[i] = dtype == DTYPE_BF16 ? bf16_to_float(tmp[i]) : fp16_to_float(tmp[i]);
    free(tmp);
}

void *dev_upload_f32(const float *host, int64_t n) {
    void *dev = dev_alloc((size_t)n * sizeof(float));
    CUDA_CHECK(cudaMemcpy(dev, host, (size_t)n * sizeof(float), cudaMemcpyHostToDevice));
    return dev;
}

void dev_download_f32(float *host, const void *dev, int64_t n) {
    CUDA_CHECK(cudaMemcpy(host, dev, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
}

// ---- shared handles ----------------------------------------------------------------------
static cublasHandle_t cublas;
static cublasLtHandle_t cublaslt;
static void *workspace;
// 32 MiB: what cuBLAS recommends for Hopper (it uses more for its fastest split-K kernels).
static const size_t WORKSPACE_BYTES = 32u << 20;

void *gpu_workspace(size_t *bytes) {
    if (!workspace) workspace = dev_alloc(WORKSPACE_BYTES);
    if (bytes) *bytes = WORKSPACE_BYTES;
    return workspace;
}

void *gpu_cublas_handle(void) {
    if (!cublas) {
        CUBLAS_CHECK(cublasCreate(&cublas));
        size_t bytes;
        void *ws = gpu_workspace(&bytes);
        CUBLAS_CHECK(cublasSetWorkspace(cublas, ws, bytes));
    }
    return cublas;
}

void *gpu_cublaslt_handle(void) {
    if (!cublaslt) CUBLAS_CHECK(cublasLtCreate(&cublaslt));
    return cublaslt;
}

void gpu_synchronize(void) { CUDA_CHECK(cudaDeviceSynchronize()); }
