// Copyright (c) the convstore authors.
// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace convstore::detail {

// The words of a text for search: runs of ASCII letters and digits and of
// multi-byte UTF-8 characters (any byte >= 0x80 counts as a letter), ASCII
// lower-cased. They never hold a quote, a backslash or any other character
// with a meaning in FTS5 or tsquery syntax. Calendar events store theirs
// (search_words) and message queries split their terms with it, so both
// backends' indexes see the same plain words.
std::vector<std::string> words_of(std::string_view text);

}  // namespace convstore::detail
