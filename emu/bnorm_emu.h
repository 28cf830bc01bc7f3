/* Controls of the CPU emulator, for tests and debugging. Exported only by
 * bnorm_emu (the emulated build); a program linked against the real bnorm
 * must not call them. */
#ifndef BNORM_EMU_H_
#define BNORM_EMU_H_

#ifdef __cplusplus
extern "C" {
#endif

/* enabled != 0: every block resumes its threads in a random order (seeded,
 * so a failing schedule can be replayed) after every barrier, which exposes
 * a missing __syncthreads as wrong results. 0: ascending thread order. */
void bnormEmuSetRandomSchedule(int enabled, unsigned long long seed);

/* Host threads that run blocks of ordinary grids (BNORM_EMU_THREADS, else
 * the machine's hardware concurrency). */
int bnormEmuHostThreads(void);

/* Grids the emulator has run since the process started (cooperative_only
 * != 0: only those launched cooperatively), so that a test can tell which
 * kernels a call chose: the persistent path is one cooperative grid. */
unsigned long long bnormEmuGridsRun(int cooperative_only);

#ifdef __cplusplus
}
#endif

#endif /* BNORM_EMU_H_ */
