# Fails when ptxas serialises the warpgroup MMAs of a Hopper kernel: its info C7520 ("wgmma.
# mma_async instructions are serialized ...") means every wgmma then waits for the previous one
# to finish — a silent 1.2-2x slowdown, found on the H100 after a wgmma had been put under a
# branch (docs/CUDA.md). ptxas reports it only as info, so this compiles each file that uses
# cuda/wgmma.cuh for sm_90a with -Xptxas -v and reads the report. Runs on CPU-only machines.
#   cmake -DNVCC=<nvcc> -DROOT=<repo> -DOUT=<dir> -DFILES="src/cuda/a.cu;..." -P check_wgmma_pipeline.cmake
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME_WE)
  execute_process(
    COMMAND ${NVCC} -std=c++20 -O3 -DNDEBUG --expt-relaxed-constexpr -Xcompiler=-fPIC
            --generate-code=arch=compute_90a,code=[sm_90a] -DUNIQUE_CUDA_SM90A=1 -DUNIQUE_WITH_CUDA=1
            -I${ROOT}/include -I${ROOT}/src -Xptxas -v -c ${ROOT}/${f} -o ${OUT}/wgmma_check_${name}.o
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${f}: nvcc failed (${rc}):\n${err}")
  endif()
  if("${out}${err}" MATCHES "C7520|wgmma.mma_async instructions are serialized")
    string(REGEX MATCHALL "[^\n]*C7520[^\n]*" lines "${out}${err}")
    list(JOIN lines "\n" lines)
    message(FATAL_ERROR "${f}: ptxas serialises its wgmma (expected: none):\n${lines}")
  endif()
  message(STATUS "${f}: wgmma pipelined (no C7520)")
endforeach()
