/* shard.c: see shard.h. The C functions and the BPF programs must agree bit for bit:
 * Tests/CoreTests/shard_tests.c sends datagrams and connections through real groups and
 * checks each lands on the member these functions name. */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <string.h>
#include "shard.h"
#include "relay_core.h"

/* 32-bit FNV-1a and fmix32, not hash.h's 64-bit rl_hash64: classic BPF computes in 32 bits,
 * and the kernel's program and rl_shard_of must agree. */
#define FNV_BASIS 2166136261u
#define FNV_PRIME 16777619u
#define GOLDEN 0x9e3779b1u

/* murmur3's finaliser: without it FNV-1a mod 2^k depends only on each byte's low k bits. */
static uint32_t fmix32(uint32_t h) {
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

uint32_t rl_shard_of(uint32_t seed, const char *id, size_t len, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t h = FNV_BASIS ^ seed;
    for (size_t i = 0; i < len && i < RL_ID_MAX; i++) h = (h ^ (uint8_t)id[i]) * FNV_PRIME;
    return fmix32(h) % n;
}

uint32_t rl_shard_of_source(const struct sockaddr *from, uint32_t n) {
    if (n <= 1) return 0;
    uint32_t a;
    if (from->sa_family == AF_INET) {
        a = ntohl(((const struct sockaddr_in *)from)->sin_addr.s_addr);
    } else {
        const uint8_t *b = ((const struct sockaddr_in6 *)from)->sin6_addr.s6_addr;
        uint32_t w[4];
        memcpy(w, b, sizeof w);
        a = ntohl(w[0]) ^ ntohl(w[1]) ^ ntohl(w[2]) ^ ntohl(w[3]);
    }
    return ((a * GOLDEN) >> 16) % n;
}

/* Datagram layout (PROTOCOL.md): magic, version, type, ID length, ID. The program walks the
 * ID unrolled (classic BPF has no loops): one block of six instructions per possible byte,
 * each skipping to the next block's length test once the ID has ended. */
int rl_shard_attach_udp(int fd, uint32_t seed, uint32_t n) {
    struct sock_filter p[6 + 6 * RL_ID_MAX + 13];
    int k = 0;
    p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 3);
    /* No ID (length 0 or over RL_ID_MAX): member 0, which drops it as malformed. */
    p[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, 0);
    p[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, RL_ID_MAX, 0, 1);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, 0);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ST, 0);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_LDX | BPF_W | BPF_IMM, FNV_BASIS ^ seed);
    for (uint32_t i = 0; i < RL_ID_MAX; i++) {
        p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_MEM, 0);
        p[k++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, i, 0, 4);
        p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 4 + i);
        p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0);
        p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, FNV_PRIME);
        p[k++] = (struct sock_filter)BPF_STMT(BPF_MISC | BPF_TAX, 0);
    }
    static const struct { uint16_t code; uint32_t k; } mix[] = {
        {BPF_MISC | BPF_TXA, 0},          {BPF_ALU | BPF_RSH | BPF_K, 16}, {BPF_ALU | BPF_XOR | BPF_X, 0},
        {BPF_ALU | BPF_MUL | BPF_K, 0x85ebca6bu}, {BPF_MISC | BPF_TAX, 0}, {BPF_ALU | BPF_RSH | BPF_K, 13},
        {BPF_ALU | BPF_XOR | BPF_X, 0},   {BPF_ALU | BPF_MUL | BPF_K, 0xc2b2ae35u}, {BPF_MISC | BPF_TAX, 0},
        {BPF_ALU | BPF_RSH | BPF_K, 16},  {BPF_ALU | BPF_XOR | BPF_X, 0},
    };
    for (size_t i = 0; i < sizeof mix / sizeof mix[0]; i++) p[k++] = (struct sock_filter)BPF_STMT(mix[i].code, mix[i].k);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    struct sock_fprog prog = {(unsigned short)k, p};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog);
}

/* A SYN carries no payload: the program reads the source address in the IP header. */
int rl_shard_attach_terminal(int fd, int family, uint32_t n) {
    struct sock_filter p[16];
    int k = 0;
    if (family == AF_INET) {
        p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 12);
    } else {
        p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + 8);
        for (uint32_t off = 12; off <= 20; off += 4) {
            p[k++] = (struct sock_filter)BPF_STMT(BPF_MISC | BPF_TAX, 0);
            p[k++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)SKF_NET_OFF + off);
            p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_XOR | BPF_X, 0);
        }
    }
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MUL | BPF_K, GOLDEN);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_RSH | BPF_K, 16);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n);
    p[k++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_A, 0);
    struct sock_fprog prog = {(unsigned short)k, p};
    return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog);
}
