// OpenBLAS inside our OpenMP threads: one thread pool for the whole engine.
#pragma once

namespace unique::engine::detail {
// Makes OpenBLAS single-threaded (once): its own pthreads would spin against the OpenMP
// team (measured 5x slower decode on 2 cores); we parallelise around BLAS calls instead.
void blas_single_threaded();
}  // namespace unique::engine::detail
