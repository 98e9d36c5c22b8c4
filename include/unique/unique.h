// Umbrella header of the attention library.
#pragma once
#include "unique/config.h"
#include "unique/decode.h"
#include "unique/dtype.h"
#include "unique/error.h"
#include "unique/kv_cache.h"
#include "unique/metrics.h"
#include "unique/page_stats.h"
#include "unique/paged_kv.h"
#include "unique/prefill.h"
#include "unique/selection.h"
#include "unique/tensor.h"
#include "unique/version.h"
