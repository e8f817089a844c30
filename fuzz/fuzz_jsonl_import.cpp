// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
//
// import_jsonl() on arbitrary bytes, each input into the same empty
// SQLite store (fuzz::ResettableStore). The first byte chooses the options
// (skip_bad_lines, a batch of 1 or 7 rows); the rest is the file. After an import that succeeds,
// the store is exported and the export imported again into the same store, which must change
// nothing (an import is idempotent): a difference is a finding, like a crash or a sanitizer report.

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "fuzz_support.hpp"

using namespace convstore;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  ImportOptions options;
  options.skip_bad_lines = (data[0] & 1) != 0;
  // Small batches: an import pads every batch to its full size, so the
  // default (500 rows) would bind thousands of parameters per record type
  // and input; 1 and 7 still cover a batch boundary within a type.
  options.batch_size = (data[0] & 2) != 0 ? 1 : 7;
  const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);

  static fuzz::ResettableStore fixture;
  fixture.reset();
  Store& store = fixture.store();
  ImportReport report;
  try {
    std::istringstream in(text);
    report = import_jsonl(store, in, options);
  } catch (const Error& e) {
    fuzz::expect_codes(e, {ErrorCode::invalid_argument, ErrorCode::conflict});
    return 0;
  }
  if (report.inserted == 0) return 0;

  std::ostringstream out;
  ExportReport exported = export_jsonl(store, out);
  if (exported.rows != report.inserted) {
    fuzz::fail("export row count differs from the rows imported", out.str());
  }
  std::istringstream again(out.str());
  ImportOptions again_options;
  again_options.batch_size = 7;
  ImportReport second = import_jsonl(store, again, again_options);
  if (second.inserted != 0 || second.unchanged != exported.rows) {
    fuzz::fail("importing the store's own export changed it", out.str());
  }
  return 0;
}
