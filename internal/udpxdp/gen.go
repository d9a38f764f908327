package udpxdp

// The object is committed: building strait needs no clang. Rebuilding it
// needs Debian's clang and libbpf-dev (bpf_helpers.h).
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -mcpu=v3 -I/usr/include/x86_64-linux-gnu" -target bpfel -type flow_key -type flow -type mac xdp bpf/xdp.c
