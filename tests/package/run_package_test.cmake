# Copyright (c) the convstore authors.
# SPDX-License-Identifier: MIT
#
# Tests convstore as users consume it:
#   1. configure (tests, examples, bench off), build and install convstore
#      into a fresh prefix (or, with INSTALL_FROM, install the build tree
#      that is already built there), and run the installed convstore tool;
#   2. build and run tests/package/consumer against it with find_package();
#   3. check `pkg-config --cflags --libs convstore`, then compile and run the
#      same program with nothing but pkg-config's flags;
#   4. build and run tests/package/subdir, which embeds convstore with
#      add_subdirectory().
#
# cmake -D SOURCE_DIR=<convstore source> -D BUILD_DIR=<scratch dir, wiped>
#       [-D GENERATOR=<generator>] [-D BUILD_TYPE=<config>]
#       [-D BUILD_SHARED_LIBS=ON|OFF] [-D CXX_COMPILER=<path>]
#       [-D CONVSTORE_WITH_POSTGRESQL=ON|OFF] [-D CONVSTORE_WITH_REDIS=ON|OFF]
#       [-D PARALLEL=<jobs>] [-D PKG_CONFIG_CHECK=ON|OFF]
#       [-D INSTALL_FROM=<a built convstore build tree> [-D INSTALL_CONFIG=<config>]]
#       -P run_package_test.cmake

cmake_minimum_required(VERSION 3.16)

foreach(required IN ITEMS SOURCE_DIR BUILD_DIR)
  if(NOT DEFINED ${required} OR "${${required}}" STREQUAL "")
    message(FATAL_ERROR "package test: pass -D${required}=...")
  endif()
endforeach()
if(NOT DEFINED BUILD_SHARED_LIBS)
  set(BUILD_SHARED_LIBS OFF)
endif()
if(NOT DEFINED CONVSTORE_WITH_POSTGRESQL)
  set(CONVSTORE_WITH_POSTGRESQL ON)
endif()
if(NOT DEFINED CONVSTORE_WITH_REDIS)
  set(CONVSTORE_WITH_REDIS ON)
endif()
if(NOT DEFINED PKG_CONFIG_CHECK)
  set(PKG_CONFIG_CHECK ON)
endif()
if(NOT PARALLEL)
  cmake_host_system_information(RESULT PARALLEL QUERY NUMBER_OF_LOGICAL_CORES)
endif()

get_filename_component(SOURCE_DIR "${SOURCE_DIR}" ABSOLUTE)
get_filename_component(BUILD_DIR "${BUILD_DIR}" ABSOLUTE)
set(package_dir "${SOURCE_DIR}/tests/package")
set(library_build "${BUILD_DIR}/convstore-build")
set(prefix "${BUILD_DIR}/prefix")

# Arguments every configure step shares.
set(common_args)
if(GENERATOR)
  list(APPEND common_args -G "${GENERATOR}")
endif()
if(BUILD_TYPE)
  list(APPEND common_args "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
  set(config_args --config "${BUILD_TYPE}")
else()
  set(config_args)
endif()
if(CXX_COMPILER)
  list(APPEND common_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
# Arguments of the configure steps that build convstore.
set(convstore_args
  "-DBUILD_SHARED_LIBS=${BUILD_SHARED_LIBS}"
  "-DCONVSTORE_WITH_POSTGRESQL=${CONVSTORE_WITH_POSTGRESQL}"
  "-DCONVSTORE_WITH_REDIS=${CONVSTORE_WITH_REDIS}")

# Runs one step; stops the test with `what` and the exit status if it fails.
# The output goes to the test log (ctest --output-on-failure shows it).
function(step what)
  message(STATUS "package test: ${what}")
  execute_process(COMMAND ${ARGN}
    WORKING_DIRECTORY "${BUILD_DIR}"
    RESULT_VARIABLE status
    OUTPUT_VARIABLE out
    ERROR_VARIABLE out)
  message("${out}")
  if(NOT status EQUAL 0)
    message(FATAL_ERROR "package test FAILED: ${what} (exit status: ${status})")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# Checks that a consumer printed "convstore <version> schema <n>".
function(check_consumer_output what output)
  if(NOT output MATCHES "convstore ${version} schema [0-9]+")
    message(FATAL_ERROR "package test FAILED: ${what} printed\n${output}\n"
      "expected \"convstore ${version} schema <n>\"")
  endif()
endfunction()

file(REMOVE_RECURSE "${BUILD_DIR}")
file(MAKE_DIRECTORY "${BUILD_DIR}")

# 1. Install convstore.
if(INSTALL_FROM)
  # The build tree the test runs from is built already: installing it is
  # what a user does after building, and saves a second build of the library.
  set(install_config)
  if(INSTALL_CONFIG)
    set(install_config --config "${INSTALL_CONFIG}")
  endif()
  load_cache("${INSTALL_FROM}" READ_WITH_PREFIX from_ CMAKE_INSTALL_LIBDIR)
  if(IS_ABSOLUTE "${from_CMAKE_INSTALL_LIBDIR}")
    message(FATAL_ERROR "package test: ${INSTALL_FROM} installs into the absolute "
      "${from_CMAKE_INSTALL_LIBDIR}; it cannot be installed into a scratch prefix")
  endif()
  set(libdir "${from_CMAKE_INSTALL_LIBDIR}")
  step("install the convstore build tree ${INSTALL_FROM} into ${prefix}"
    "${CMAKE_COMMAND}" --install "${INSTALL_FROM}" ${install_config} --prefix "${prefix}")
else()
  set(libdir lib)
  step("configure convstore (BUILD_SHARED_LIBS=${BUILD_SHARED_LIBS})"
    "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${library_build}" ${common_args} ${convstore_args}
    "-DCMAKE_INSTALL_PREFIX=${prefix}" -DCMAKE_INSTALL_LIBDIR=lib
    -DCONVSTORE_BUILD_TESTS=OFF -DCONVSTORE_BUILD_EXAMPLES=OFF -DCONVSTORE_BUILD_BENCH=OFF
    -DCONVSTORE_INSTALL=ON)
  step("build convstore"
    "${CMAKE_COMMAND}" --build "${library_build}" ${config_args} --parallel ${PARALLEL})
  step("install convstore into ${prefix}"
    "${CMAKE_COMMAND}" --install "${library_build}" ${config_args})
endif()

set(version_file "${prefix}/${libdir}/cmake/convstore/convstoreConfigVersion.cmake")
if(NOT EXISTS "${version_file}")
  message(FATAL_ERROR "package test FAILED: install did not create ${version_file}")
endif()
file(STRINGS "${version_file}" version_line REGEX "^set\\(PACKAGE_VERSION \"[0-9.]+\"\\)")
string(REGEX REPLACE "^set\\(PACKAGE_VERSION \"([0-9.]+)\"\\)$" "\\1" version "${version_line}")
if(NOT version MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  message(FATAL_ERROR "package test FAILED: no version in ${version_file}")
endif()
foreach(file IN ITEMS ${libdir}/cmake/convstore/convstoreConfig.cmake
                      ${libdir}/cmake/convstore/FindSOCI.cmake
                      ${libdir}/cmake/convstore/Findhiredis.cmake
                      ${libdir}/cmake/convstore/Findsodium.cmake
                      ${libdir}/pkgconfig/convstore.pc include/convstore/convstore.hpp
                      include/convstore/version.hpp include/convstore/config.hpp
                      include/convstore/export.hpp)
  if(NOT EXISTS "${prefix}/${file}")
    message(FATAL_ERROR "package test FAILED: install did not create ${prefix}/${file}")
  endif()
endforeach()

# The convstore tool is installed with the library (CONVSTORE_BUILD_CLI is ON
# in a top-level build) and runs from the prefix (a shared libconvstore is
# found through its RPATH).
set(cli_exe "${prefix}/bin/convstore")
if(NOT EXISTS "${cli_exe}")
  message(FATAL_ERROR "package test FAILED: install did not create ${cli_exe}")
endif()
step("run the installed convstore tool" "${cli_exe}" --version)
if(NOT step_output MATCHES "convstore ${version}")
  message(FATAL_ERROR "package test FAILED: convstore --version printed\n${step_output}")
endif()
step("migrate a database with the installed convstore tool"
  "${cli_exe}" migrate "sqlite:${BUILD_DIR}/cli-check.db")

# 2. find_package() consumer.
step("configure the find_package consumer"
  "${CMAKE_COMMAND}" -S "${package_dir}/consumer" -B "${BUILD_DIR}/consumer" ${common_args}
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DCONVSTORE_EXPECTED_PREFIX=${prefix}")
step("build the find_package consumer"
  "${CMAKE_COMMAND}" --build "${BUILD_DIR}/consumer" ${config_args} --parallel ${PARALLEL})
find_program(consumer_exe consumer
  PATHS "${BUILD_DIR}/consumer" PATH_SUFFIXES ${BUILD_TYPE} Debug NO_DEFAULT_PATH)
if(NOT consumer_exe)
  message(FATAL_ERROR "package test FAILED: no consumer executable in ${BUILD_DIR}/consumer")
endif()
step("run the find_package consumer" "${consumer_exe}")
check_consumer_output("the find_package consumer" "${step_output}")

# 3. pkg-config.
if(PKG_CONFIG_CHECK)
  find_program(pkg_config pkg-config)
  if(NOT pkg_config)
    message(FATAL_ERROR "package test FAILED: pkg-config not found "
      "(install it, or pass -DPKG_CONFIG_CHECK=OFF)")
  endif()
  set(pc_env "${CMAKE_COMMAND}" -E env "PKG_CONFIG_PATH=${prefix}/${libdir}/pkgconfig")
  step("pkg-config --cflags --libs convstore"
    ${pc_env} "${pkg_config}" --cflags --libs convstore)
  set(pc_query --cflags --libs)
  if(NOT BUILD_SHARED_LIBS)
    list(APPEND pc_query --static)
  endif()
  step("pkg-config ${pc_query} convstore" ${pc_env} "${pkg_config}" ${pc_query} convstore)
  string(STRIP "${step_output}" pc_flags)
  separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
  if(NOT CXX_COMPILER)
    find_program(CXX_COMPILER NAMES c++ g++ clang++)
  endif()
  if(NOT CXX_COMPILER)
    message(FATAL_ERROR "package test FAILED: no C++ compiler for the pkg-config build "
      "(pass -DCXX_COMPILER=...)")
  endif()
  step("compile the consumer with pkg-config's flags"
    "${CXX_COMPILER}" -std=c++17 "${package_dir}/consumer/main.cpp" -o
    "${BUILD_DIR}/pkg-config-consumer" ${pc_flags} "-Wl,-rpath,${prefix}/${libdir}")
  step("run the pkg-config consumer" "${BUILD_DIR}/pkg-config-consumer")
  check_consumer_output("the pkg-config consumer" "${step_output}")
endif()

# 4. add_subdirectory() consumer.
step("configure the add_subdirectory consumer"
  "${CMAKE_COMMAND}" -S "${package_dir}/subdir" -B "${BUILD_DIR}/subdir" ${common_args} ${convstore_args}
  "-DCONVSTORE_SOURCE_DIR=${SOURCE_DIR}")
step("build the add_subdirectory consumer"
  "${CMAKE_COMMAND}" --build "${BUILD_DIR}/subdir" ${config_args} --parallel ${PARALLEL})
find_program(subdir_exe consumer
  PATHS "${BUILD_DIR}/subdir" PATH_SUFFIXES ${BUILD_TYPE} Debug NO_DEFAULT_PATH)
if(NOT subdir_exe)
  message(FATAL_ERROR "package test FAILED: no consumer executable in ${BUILD_DIR}/subdir")
endif()
step("run the add_subdirectory consumer" "${subdir_exe}")
check_consumer_output("the add_subdirectory consumer" "${step_output}")

message(STATUS "package test: passed (convstore ${version}, "
  "BUILD_SHARED_LIBS=${BUILD_SHARED_LIBS})")
