# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Findhiredis
# -----------
# Finds hiredis, the C client library for Redis.
#
# Imported target: hiredis::hiredis (include as <hiredis/hiredis.h>).
# Result variables: hiredis_FOUND, hiredis_VERSION, hiredis_INCLUDE_DIRS,
# hiredis_LIBRARIES.
# Cache variables: hiredis_INCLUDE_DIR, hiredis_LIBRARY.
#
# hiredis 1.x installs a CMake package exporting hiredis::hiredis; it is used
# when present. Otherwise (Debian's libhiredis-dev 0.14 ships only a
# pkg-config file, and a CMake file without targets) the header and library
# are searched directly, with pkg-config's answer as a hint.

include(FindPackageHandleStandardArgs)

if(NOT TARGET hiredis::hiredis AND NOT hiredis_NO_CONFIG)
  find_package(hiredis CONFIG QUIET)
endif()

if(NOT TARGET hiredis::hiredis)
  find_package(PkgConfig QUIET)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(PC_hiredis QUIET hiredis)
  endif()
  # pkg-config names the hiredis/ directory itself; the target uses its parent
  # so that <hiredis/hiredis.h> resolves.
  set(_hiredis_hints "")
  foreach(_hiredis_dir IN LISTS PC_hiredis_INCLUDEDIR PC_hiredis_INCLUDE_DIRS)
    get_filename_component(_hiredis_parent "${_hiredis_dir}" DIRECTORY)
    list(APPEND _hiredis_hints "${_hiredis_parent}")
  endforeach()
  find_path(hiredis_INCLUDE_DIR NAMES hiredis/hiredis.h HINTS ${_hiredis_hints}
    DOC "Directory containing hiredis/hiredis.h")
  find_library(hiredis_LIBRARY NAMES hiredis
    HINTS ${PC_hiredis_LIBDIR} ${PC_hiredis_LIBRARY_DIRS}
    DOC "hiredis library")
  mark_as_advanced(hiredis_INCLUDE_DIR hiredis_LIBRARY)

  if(hiredis_INCLUDE_DIR AND EXISTS "${hiredis_INCLUDE_DIR}/hiredis/hiredis.h")
    file(STRINGS "${hiredis_INCLUDE_DIR}/hiredis/hiredis.h" _hiredis_version_lines
      REGEX "^#define[ \t]+HIREDIS_(MAJOR|MINOR|PATCH)[ \t]+[0-9]+")
    set(hiredis_VERSION "")
    foreach(_hiredis_part IN ITEMS MAJOR MINOR PATCH)
      if(_hiredis_version_lines MATCHES "HIREDIS_${_hiredis_part}[ \t]+([0-9]+)")
        list(APPEND hiredis_VERSION "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    list(JOIN hiredis_VERSION "." hiredis_VERSION)
  endif()
  if(hiredis_VERSION STREQUAL "" AND PC_hiredis_VERSION)
    set(hiredis_VERSION "${PC_hiredis_VERSION}")
  endif()

  if(hiredis_INCLUDE_DIR AND hiredis_LIBRARY)
    add_library(hiredis::hiredis UNKNOWN IMPORTED)
    set_target_properties(hiredis::hiredis PROPERTIES
      IMPORTED_LOCATION "${hiredis_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${hiredis_INCLUDE_DIR}")
  endif()
  set(_hiredis_required_vars hiredis_LIBRARY hiredis_INCLUDE_DIR)
else()
  # Found before, or through hiredis's own CMake package.
  if(hiredis_CONFIG)
    set(hiredis_LIBRARY_FROM "${hiredis_CONFIG}")
  elseif(hiredis_LIBRARY)
    set(hiredis_LIBRARY_FROM "${hiredis_LIBRARY}")
  else()
    set(hiredis_LIBRARY_FROM hiredis::hiredis)
  endif()
  set(_hiredis_required_vars hiredis_LIBRARY_FROM)
endif()

find_package_handle_standard_args(hiredis
  REQUIRED_VARS ${_hiredis_required_vars}
  VERSION_VAR hiredis_VERSION)

if(hiredis_FOUND)
  set(hiredis_LIBRARIES hiredis::hiredis)
  get_target_property(hiredis_INCLUDE_DIRS hiredis::hiredis INTERFACE_INCLUDE_DIRECTORIES)
endif()

unset(_hiredis_hints)
unset(_hiredis_parent)
unset(_hiredis_dir)
unset(_hiredis_required_vars)
unset(_hiredis_version_lines)
unset(_hiredis_part)
