/* SHA-256 for the signer's compiled paths (_native_chain.c, _native_rows.c), included by both so there is one
 * copy of it. Each module decides at configure() whether to use it (sha256_extensions_agree) and otherwise
 * hashes through hashlib.
 *
 * Include after Python.h.
 */
#ifndef AUDIT_SIGNER_SHA256_H
#define AUDIT_SIGNER_SHA256_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* SHA-256 in the CPU's SHA extensions where it has them (x86-64: SHA-NI), written from the instruction set's
 * definition: the same digest as hashlib's without its per-hash objects, which cost more than the hashing of
 * the short inputs here. Checked against hashlib when a module is configured; elsewhere hashlib does the hashing. */
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_EXTENSIONS 1

static const uint32_t ROUND_CONSTANTS[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* ``blocks`` 64-byte blocks into ``state`` (a b c d e f g h). */
__attribute__((target("sha,sse4.1,ssse3"))) static void
sha256_blocks(uint32_t state[8], const unsigned char *data, size_t blocks)
{
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    /* The instructions keep the state as (a b e f) and (c d g h). */
    __m128i dcba = _mm_loadu_si128((const __m128i *)&state[0]);
    __m128i hgfe = _mm_loadu_si128((const __m128i *)&state[4]);
    __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
    __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (; blocks; blocks--, data += 64) {
        __m128i abef_before = abef, cdgh_before = cdgh;
        __m128i words[4];  /* the message schedule's last 16 words, 4 to a register, in a ring */
        for (int group = 0; group < 16; group++) {
            __m128i w;
            if (group < 4) {
                w = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16 * group)), byte_swap);
            } else {
                /* W[t] = s1(W[t-2]) + W[t-7] + s0(W[t-15]) + W[t-16], four at a time */
                w = _mm_sha256msg1_epu32(words[group % 4], words[(group + 1) % 4]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(words[(group + 3) % 4], words[(group + 2) % 4], 4));
                w = _mm_sha256msg2_epu32(w, words[(group + 3) % 4]);
            }
            words[group % 4] = w;
            __m128i scheduled = _mm_add_epi32(w, _mm_loadu_si128((const __m128i *)&ROUND_CONSTANTS[4 * group]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, scheduled);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(scheduled, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_before);
        cdgh = _mm_add_epi32(cdgh, cdgh_before);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

static int
cpu_has_sha_extensions(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_SSE4_1) || !(ecx & bit_SSSE3)) {
        return 0;
    }
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        return 0;
    }
    return (ebx & bit_SHA) != 0;
}

typedef struct {
    uint32_t state[8];
    unsigned char pending[64];
    size_t pending_size;
    uint64_t total;
} Sha256;

static void
sha256_start(Sha256 *sha)
{
    static const uint32_t initial[8] = {
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    };
    memcpy(sha->state, initial, sizeof(initial));
    sha->pending_size = 0;
    sha->total = 0;
}

static void
sha256_add(Sha256 *sha, const unsigned char *data, size_t size)
{
    if (size == 0) {
        return;
    }
    sha->total += size;
    if (sha->pending_size) {
        size_t taken = 64 - sha->pending_size < size ? 64 - sha->pending_size : size;
        memcpy(sha->pending + sha->pending_size, data, taken);
        sha->pending_size += taken;
        data += taken;
        size -= taken;
        if (sha->pending_size < 64) {
            return;
        }
        sha256_blocks(sha->state, sha->pending, 1);
        sha->pending_size = 0;
    }
    if (size >= 64) {
        sha256_blocks(sha->state, data, size / 64);
        data += size - size % 64;
        size %= 64;
    }
    memcpy(sha->pending, data, size);
    sha->pending_size = size;
}

static void
sha256_end(Sha256 *sha, unsigned char digest[32])
{
    uint64_t bits = sha->total * 8;
    unsigned char tail[72] = {0x80};
    size_t padding = (sha->pending_size < 56 ? 56 : 120) - sha->pending_size;
    for (int i = 0; i < 8; i++) {
        tail[padding + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    sha256_add(sha, tail, padding + 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (unsigned char)(sha->state[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(sha->state[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(sha->state[i] >> 8);
        digest[4 * i + 3] = (unsigned char)sha->state[i];
    }
}
#endif

#ifdef HAVE_SHA_EXTENSIONS
/* Whether the CPU has the SHA extensions and sha256_start/add/end give hashlib's digests with them: lengths
 * around every padding case and over several blocks, each fed in three uneven parts. 1 yes, 0 no, -1 an
 * error (an exception set) from calling ``sha256`` (hashlib.sha256). */
static int
sha256_extensions_agree(PyObject *sha256)
{
    if (!cpu_has_sha_extensions()) {
        return 0;
    }
    unsigned char message[300];
    for (size_t i = 0; i < sizeof(message); i++) {
        message[i] = (unsigned char)(i * 131 + 7);
    }
    for (size_t size = 0; size <= sizeof(message); size += size < 130 ? 1 : 17) {
        PyObject *hasher = PyObject_CallFunction(sha256, "y#", (const char *)message, (Py_ssize_t)size);
        PyObject *expected = hasher == NULL ? NULL : PyObject_CallMethod(hasher, "digest", NULL);
        Py_XDECREF(hasher);
        if (expected == NULL) {
            return -1;
        }
        Sha256 sha;
        unsigned char got[32];
        sha256_start(&sha);
        sha256_add(&sha, message, size / 3);
        sha256_add(&sha, message + size / 3, size / 2 - size / 3);
        sha256_add(&sha, message + size / 2, size - size / 2);
        sha256_end(&sha, got);
        int agrees = PyBytes_Check(expected) && PyBytes_GET_SIZE(expected) == 32
                     && memcmp(PyBytes_AS_STRING(expected), got, 32) == 0;
        Py_DECREF(expected);
        if (!agrees) {
            return 0;
        }
    }
    return 1;
}
#endif

#endif /* AUDIT_SIGNER_SHA256_H */
