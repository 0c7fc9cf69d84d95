// dqn's answer to MKL's "is this an Intel CPU?" (see dqn_cli/mkl.py): loaded into the process's global scope before
// torch, it is found before MKL's own, and MKL then picks its kernels by the CPU's features (AVX-512 on AMD Zen 4 and
// later) instead of by its vendor.
extern "C" int mkl_serv_intel_cpu_true() { return 1; }
