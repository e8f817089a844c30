# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# FindSOCI
# --------
# Finds SOCI (https://soci.sourceforge.net), the C++ database access library.
#
# Components: core (always searched), sqlite3, postgresql.
#
# Imported targets, whichever SOCI was found:
#   SOCI::soci_core        the core library and the include directory
#   SOCI::soci_sqlite3     the SQLite backend (links SOCI::soci_core, SQLite::SQLite3)
#   SOCI::soci_postgresql  the PostgreSQL backend (links SOCI::soci_core,
#                          PostgreSQL::PostgreSQL, whose include directory
#                          <soci/postgresql/soci-postgresql.h> needs for <libpq-fe.h>)
#
# Result variables: SOCI_FOUND, SOCI_VERSION, SOCI_<component>_FOUND,
# SOCI_INCLUDE_DIRS, SOCI_LIBRARIES.
# Cache variables: SOCI_INCLUDE_DIR, SOCI_core_LIBRARY, SOCI_<component>_LIBRARY.
#
# An upstream SOCI CMake package is used when there is one: SOCI 4.0.x
# exports SOCI::soci_<name>, SOCI 4.1+ exports SOCI::Core, SOCI::SQLite3,
# SOCI::PostgreSQL; the names above are made to point at those. Otherwise
# (Debian's libsoci-dev ships no CMake or pkg-config file) the headers and
# libraries are searched directly. Set SOCI_ROOT to search a prefix first.

include(FindPackageHandleStandardArgs)

set(_soci_components core ${SOCI_FIND_COMPONENTS})
list(REMOVE_DUPLICATES _soci_components)
set(_soci_known_components core sqlite3 postgresql)
# Names of each component in upstream CMake packages, tried in order.
set(_soci_upstream_core SOCI::soci_core SOCI::Core SOCI::soci_core_static)
set(_soci_upstream_sqlite3 SOCI::soci_sqlite3 SOCI::SQLite3 SOCI::soci_sqlite3_static)
set(_soci_upstream_postgresql
  SOCI::soci_postgresql SOCI::PostgreSQL SOCI::soci_postgresql_static)
set(_soci_upstream_component_sqlite3 SQLite3)
set(_soci_upstream_component_postgresql PostgreSQL)

foreach(_soci_c IN LISTS _soci_components)
  if(NOT _soci_c IN_LIST _soci_known_components)
    message(FATAL_ERROR "FindSOCI: unknown component '${_soci_c}' "
      "(known: ${_soci_known_components})")
  endif()
endforeach()

# 1. An upstream CMake package. The nested find_package() restores this
#    module's SOCI_FIND_* variables when it returns.
if(NOT TARGET SOCI::soci_core AND NOT SOCI_NO_CONFIG)
  set(_soci_config_components "")
  foreach(_soci_c IN LISTS _soci_components)
    if(DEFINED _soci_upstream_component_${_soci_c})
      list(APPEND _soci_config_components ${_soci_upstream_component_${_soci_c}})
    endif()
  endforeach()
  find_package(SOCI CONFIG QUIET COMPONENTS ${_soci_config_components})
  foreach(_soci_c IN LISTS _soci_components)
    foreach(_soci_t IN LISTS _soci_upstream_${_soci_c})
      if(TARGET ${_soci_t})
        if(NOT TARGET SOCI::soci_${_soci_c})
          add_library(SOCI::soci_${_soci_c} INTERFACE IMPORTED)
          set_target_properties(SOCI::soci_${_soci_c} PROPERTIES
            INTERFACE_LINK_LIBRARIES ${_soci_t})
        endif()
        break()
      endif()
    endforeach()
  endforeach()
endif()

# 2. The include directory (also used with an upstream package, for the
#    version).
find_path(SOCI_INCLUDE_DIR NAMES soci/soci.h DOC "Directory containing soci/soci.h")
mark_as_advanced(SOCI_INCLUDE_DIR)

# 3. Without an upstream package, the libraries themselves.
if(NOT TARGET SOCI::soci_core)
  find_library(SOCI_core_LIBRARY NAMES soci_core soci_core_4_1 soci_core_4_0
    DOC "SOCI core library")
  mark_as_advanced(SOCI_core_LIBRARY)
  if(SOCI_core_LIBRARY AND SOCI_INCLUDE_DIR)
    add_library(SOCI::soci_core UNKNOWN IMPORTED)
    set_target_properties(SOCI::soci_core PROPERTIES
      IMPORTED_LOCATION "${SOCI_core_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${SOCI_INCLUDE_DIR}")
    # A static libsoci_core needs the thread and dlopen libraries.
    if(SOCI_core_LIBRARY MATCHES "\\${CMAKE_STATIC_LIBRARY_SUFFIX}$")
      find_package(Threads QUIET)
      if(TARGET Threads::Threads)
        set_property(TARGET SOCI::soci_core APPEND PROPERTY
          INTERFACE_LINK_LIBRARIES Threads::Threads)
      endif()
      set_property(TARGET SOCI::soci_core APPEND PROPERTY
        INTERFACE_LINK_LIBRARIES ${CMAKE_DL_LIBS})
    endif()
  endif()
endif()

foreach(_soci_c IN ITEMS sqlite3 postgresql)
  if(NOT _soci_c IN_LIST _soci_components OR TARGET SOCI::soci_${_soci_c})
    continue()
  endif()
  find_library(SOCI_${_soci_c}_LIBRARY
    NAMES soci_${_soci_c} soci_${_soci_c}_4_1 soci_${_soci_c}_4_0
    DOC "SOCI ${_soci_c} backend library")
  mark_as_advanced(SOCI_${_soci_c}_LIBRARY)
  # What the backend's header includes and the backend library links.
  if(_soci_c STREQUAL "sqlite3")
    if(NOT TARGET SQLite::SQLite3)
      find_package(SQLite3 QUIET)
    endif()
    set(_soci_dep_target SQLite::SQLite3)
    set(_soci_dep_includes "${SQLite3_INCLUDE_DIRS}")
  else()
    if(NOT TARGET PostgreSQL::PostgreSQL)
      find_package(PostgreSQL QUIET)
    endif()
    set(_soci_dep_target PostgreSQL::PostgreSQL)
    set(_soci_dep_includes "${PostgreSQL_INCLUDE_DIRS}")
  endif()
  if(SOCI_${_soci_c}_LIBRARY AND TARGET SOCI::soci_core AND TARGET ${_soci_dep_target})
    add_library(SOCI::soci_${_soci_c} UNKNOWN IMPORTED)
    set_target_properties(SOCI::soci_${_soci_c} PROPERTIES
      IMPORTED_LOCATION "${SOCI_${_soci_c}_LIBRARY}"
      INTERFACE_LINK_LIBRARIES "SOCI::soci_core;${_soci_dep_target}")
    if(_soci_dep_includes)
      set_target_properties(SOCI::soci_${_soci_c} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${_soci_dep_includes}")
    endif()
  endif()
endforeach()

# 4. The version.
set(_soci_header_version "")
if(SOCI_INCLUDE_DIR AND EXISTS "${SOCI_INCLUDE_DIR}/soci/version.h")
  file(STRINGS "${SOCI_INCLUDE_DIR}/soci/version.h" _soci_version_lines
    REGEX "^#define[ \t]+SOCI_(LIB_)?VERSION[ \t]")
  if(_soci_version_lines MATCHES "SOCI_LIB_VERSION[ \t]+\"([0-9]+)_([0-9]+)(_([0-9]+))?\"")
    set(_soci_header_version "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
    if(CMAKE_MATCH_4 STREQUAL "")
      string(APPEND _soci_header_version ".0")
    else()
      string(APPEND _soci_header_version ".${CMAKE_MATCH_4}")
    endif()
  elseif(_soci_version_lines MATCHES "SOCI_VERSION[ \t]+([0-9]+)")
    # SOCI_VERSION is major * 100000 + minor * 100 + patch.
    set(_soci_v "${CMAKE_MATCH_1}")
    math(EXPR _soci_major "${_soci_v} / 100000")
    math(EXPR _soci_minor "${_soci_v} / 100 % 1000")
    math(EXPR _soci_patch "${_soci_v} % 100")
    set(_soci_header_version "${_soci_major}.${_soci_minor}.${_soci_patch}")
  endif()
endif()

# An upstream package states its own version; the header found on the
# default path may belong to another SOCI.
if(NOT (SOCI_CONFIG AND SOCI_VERSION))
  set(SOCI_VERSION "${_soci_header_version}")
endif()

# Results.
set(SOCI_INCLUDE_DIRS "")
set(SOCI_LIBRARIES "")
foreach(_soci_c IN LISTS _soci_known_components)
  if(TARGET SOCI::soci_${_soci_c})
    set(SOCI_${_soci_c}_FOUND TRUE)
    if(_soci_c IN_LIST _soci_components)
      list(APPEND SOCI_LIBRARIES SOCI::soci_${_soci_c})
    endif()
  else()
    set(SOCI_${_soci_c}_FOUND FALSE)
  endif()
endforeach()
if(SOCI_INCLUDE_DIR)
  set(SOCI_INCLUDE_DIRS "${SOCI_INCLUDE_DIR}")
endif()

# SOCI_LIBRARY: where the core library came from, for the message.
if(NOT TARGET SOCI::soci_core)
  set(SOCI_LIBRARY "")
  set(_soci_required_vars SOCI_LIBRARY SOCI_INCLUDE_DIR)
else()
  if(SOCI_core_LIBRARY)
    set(SOCI_LIBRARY "${SOCI_core_LIBRARY}")
  elseif(SOCI_CONFIG)
    set(SOCI_LIBRARY "${SOCI_CONFIG}")
  else()
    set(SOCI_LIBRARY SOCI::soci_core)
  endif()
  set(_soci_required_vars SOCI_LIBRARY)
endif()

find_package_handle_standard_args(SOCI
  REQUIRED_VARS ${_soci_required_vars}
  VERSION_VAR SOCI_VERSION
  HANDLE_COMPONENTS)

unset(_soci_components)
unset(_soci_known_components)
unset(_soci_config_components)
unset(_soci_header_version)
unset(_soci_required_vars)
unset(_soci_version_lines)
