// The CUDA stream the library launches on (per host thread). nullptr = legacy default.
// Python bindings set it to torch's current stream before each call.
#pragma once
namespace unique {
void set_cuda_stream(void* stream);
void* cuda_stream();
bool cuda_available();  // built with CUDA and at least one device visible
}  // namespace unique
