#!/usr/bin/env bash
# XLA / JAX settings that matter for training, sourced by the other launch scripts:
#   source launch/xla_flags.sh gpu|tpu|cpu
#
# Variables (optional):
#   JAX_CACHE_DIR    persistent compilation cache (default: $HOME/.cache/diff2lip-jax/xla);
#                    a shared filesystem path lets every host reuse the first host's compiles
#   MEM_FRACTION     GPU memory XLA may preallocate (default 0.90)
#   EXTRA_XLA_FLAGS  appended to XLA_FLAGS last

_platform=${1:-}
case "$_platform" in
  gpu|tpu|cpu) ;;
  *) echo "xla_flags.sh: pass the platform: source launch/xla_flags.sh gpu|tpu|cpu" >&2
     # shellcheck disable=SC2317  # exit only when run instead of sourced
     return 2 2>/dev/null || exit 2 ;;
esac

export JAX_COMPILATION_CACHE_DIR=${JAX_CACHE_DIR:-$HOME/.cache/diff2lip-jax/xla}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-1}
mkdir -p "$JAX_COMPILATION_CACHE_DIR"

case "$_platform" in
  gpu)
    export XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.90}
    # Overlap collectives with compute; let XLA pick the faster of cuDNN/Triton GEMMs.
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true \
--xla_gpu_enable_triton_gemm=false \
--xla_gpu_all_reduce_combine_threshold_bytes=134217728 \
--xla_gpu_all_gather_combine_threshold_bytes=134217728 \
--xla_gpu_reduce_scatter_combine_threshold_bytes=134217728"
    export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
    ;;
  tpu)
    export LIBTPU_INIT_ARGS="${LIBTPU_INIT_ARGS:-} --xla_tpu_enable_latency_hiding_scheduler=true \
--xla_tpu_enable_async_collective_fusion=true --xla_tpu_enable_async_collective_fusion_fuse_all_gather=true \
--xla_tpu_overlap_compute_collective_tc=true --xla_enable_async_all_gather=true"
    ;;
  cpu)
    export JAX_PLATFORMS=cpu
    ;;
esac
export XLA_FLAGS="${XLA_FLAGS:-} ${EXTRA_XLA_FLAGS:-}"
unset _platform
