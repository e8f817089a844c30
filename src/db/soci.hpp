// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

// The one place that includes SOCI. Debian's soci-config.h defines
// SOCI_HAVE_BOOST although libsoci-dev does not pull in Boost; only the
// header-only Boost.Fusion glue depends on it, which convstore does not use.
#include <soci/soci-config.h>
#undef SOCI_HAVE_BOOST
#include <soci/soci.h>
