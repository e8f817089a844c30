# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Findsodium
# ----------
# Finds libsodium, the crypto library (random tokens, hashing, encryption).
#
# Imported target: sodium::sodium (include as <sodium.h>).
# Result variables: sodium_FOUND, sodium_VERSION, sodium_INCLUDE_DIRS,
# sodium_LIBRARIES.
# Cache variables: sodium_INCLUDE_DIR, sodium_LIBRARY.
# Input: sodium_USE_STATIC_LIBS (prefer libsodium.a).
#
# libsodium installs no CMake package (Debian's libsodium-dev ships a
# pkg-config file, libsodium.pc): the header and library are searched
# directly, with pkg-config's answer as a hint.

include(FindPackageHandleStandardArgs)

if(NOT TARGET sodium::sodium)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(PC_sodium QUIET libsodium)
  endif()
  find_path(sodium_INCLUDE_DIR NAMES sodium.h
    HINTS ${PC_sodium_INCLUDEDIR} ${PC_sodium_INCLUDE_DIRS}
    DOC "Directory containing sodium.h")
  if(sodium_USE_STATIC_LIBS)
    set(_sodium_names libsodium.a sodium)
  else()
    set(_sodium_names sodium)
  endif()
  find_library(sodium_LIBRARY NAMES ${_sodium_names}
    HINTS ${PC_sodium_LIBDIR} ${PC_sodium_LIBRARY_DIRS}
    DOC "libsodium library")
  mark_as_advanced(sodium_INCLUDE_DIR sodium_LIBRARY)

  set(sodium_VERSION "")
  if(sodium_INCLUDE_DIR AND EXISTS "${sodium_INCLUDE_DIR}/sodium/version.h")
    file(STRINGS "${sodium_INCLUDE_DIR}/sodium/version.h" _sodium_version_line
      REGEX "^#define[ \t]+SODIUM_VERSION_STRING[ \t]+\"[^\"]+\"")
    if(_sodium_version_line MATCHES "\"([^\"]+)\"")
      set(sodium_VERSION "${CMAKE_MATCH_1}")
    endif()
  endif()
  if(sodium_VERSION STREQUAL "" AND PC_sodium_VERSION)
    set(sodium_VERSION "${PC_sodium_VERSION}")
  endif()

  if(sodium_INCLUDE_DIR AND sodium_LIBRARY)
    add_library(sodium::sodium UNKNOWN IMPORTED)
    set_target_properties(sodium::sodium PROPERTIES
      IMPORTED_LOCATION "${sodium_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${sodium_INCLUDE_DIR}")
    # The static library needs the threads library (libsodium.pc's
    # Libs.private: -pthread).
    if(sodium_LIBRARY MATCHES "\\${CMAKE_STATIC_LIBRARY_SUFFIX}$")
      find_package(Threads QUIET)
      if(TARGET Threads::Threads)
        set_property(TARGET sodium::sodium APPEND PROPERTY
          INTERFACE_LINK_LIBRARIES Threads::Threads)
      endif()
      set_property(TARGET sodium::sodium APPEND PROPERTY
        INTERFACE_COMPILE_DEFINITIONS SODIUM_STATIC)
    endif()
  endif()
  set(_sodium_required_vars sodium_LIBRARY sodium_INCLUDE_DIR)
else()
  # Found before (by this module, or by a parent project's own).
  if(sodium_LIBRARY)
    set(sodium_LIBRARY_FROM "${sodium_LIBRARY}")
  else()
    set(sodium_LIBRARY_FROM sodium::sodium)
  endif()
  set(_sodium_required_vars sodium_LIBRARY_FROM)
endif()

find_package_handle_standard_args(sodium
  REQUIRED_VARS ${_sodium_required_vars}
  VERSION_VAR sodium_VERSION)

if(sodium_FOUND)
  set(sodium_LIBRARIES sodium::sodium)
  get_target_property(sodium_INCLUDE_DIRS sodium::sodium INTERFACE_INCLUDE_DIRECTORIES)
endif()

unset(_sodium_names)
unset(_sodium_required_vars)
unset(_sodium_version_line)
