# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Generates a C++ source holding a file's bytes, for the assistant_server to
# serve its web UI from memory:
#
#   cmake -DINPUT=index.html -DOUTPUT=web_assets.cpp -P embed.cmake
#
# The source defines kIndexHtml (the bytes, then a '\0' not counted) and
# kIndexHtmlSize, declared in examples/assistant_server/web_assets.hpp. Each
# byte is written as a '\xHH' character literal, so any byte (UTF-8 included)
# survives whatever the signedness of char, and no string-literal length limit
# applies.

if(NOT DEFINED INPUT OR NOT DEFINED OUTPUT)
  message(FATAL_ERROR "usage: cmake -DINPUT=<file> -DOUTPUT=<file.cpp> -P embed.cmake")
endif()
if(NOT EXISTS "${INPUT}")
  message(FATAL_ERROR "embed.cmake: ${INPUT} does not exist")
endif()

file(READ "${INPUT}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")

# 16 bytes a line: CMake regular expressions have no {n}, so spell it out.
set(pair "[0-9a-f][0-9a-f]")
set(line "${pair}${pair}${pair}${pair}${pair}${pair}${pair}${pair}")
string(REGEX REPLACE "(${line}${line})" "\\1\n" hex "${hex}")
# "@" stands for the backslash until the end: a backslash in a regex
# replacement would be read as an escape.
string(REGEX REPLACE "(${pair})" "'@x\\1'," bytes "${hex}")
string(REPLACE "@" "\\" bytes "${bytes}")
string(REPLACE "\n" "\n    " bytes "${bytes}")

get_filename_component(name "${INPUT}" NAME)
set(content "// Generated from ${name} by examples/assistant_server/web/embed.cmake: do not edit.
#include \"web_assets.hpp\"

const char kIndexHtml[] = {
    ${bytes}'\\0'};
const std::size_t kIndexHtmlSize = ${size};
")

file(WRITE "${OUTPUT}" "${content}")
