/*
 * A stand-in for Windows' bcryptprimitives.dll with the one export Rust's std needs.
 *
 * Rust >= 1.78 fills its random state (HashMap keys) with ProcessPrng from bcryptprimitives.dll,
 * imported at load time. Wine gained that DLL in 8.13; Debian 12's Wine 8.0 lacks it, so every
 * Rust program fails to start there with STATUS_DLL_NOT_FOUND (c0000135). scripts/wine.sh builds
 * this file with mingw-w64 and copies the DLL into the Wine prefix's system32. It is for testing
 * under Wine only and is never shipped: real Windows has its own DLL.
 *
 * ProcessPrng's contract (documented by Microsoft): fill pbData with cbData random bytes and
 * return TRUE; it never fails. BCryptGenRandom with the system RNG is the same generator; it
 * takes a ULONG length, so longer requests go in pieces. Should it fail, ProcessPrng cannot
 * report it, and returning unfilled bytes as random would be worse than stopping: abort.
 */
#include <windows.h>
#include <bcrypt.h>
#include <stdlib.h>

BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData)
{
    while (cbData > 0) {
        ULONG chunk = cbData > 0x40000000 ? 0x40000000 : (ULONG)cbData;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, pbData, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG)))
            abort();
        pbData += chunk;
        cbData -= chunk;
    }
    return TRUE;
}
