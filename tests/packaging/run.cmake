# The packaging test (ctest emu.packaging): install this build into a folder
# under the build tree, then build a tiny C consumer against the installed
# tree -- through find_package(bnorm CONFIG) and through pkg-config -- and run
# it on the emulated library. Run with cmake -P and:
#   BUILD_DIR   the bnorm build folder to install
#   WORK_DIR    a scratch folder (emptied first)
#   SOURCE_DIR  bnorm's source folder
#   C_COMPILER  the C compiler
#   VERSION     the version the package must report (= include/bnorm.h's)
#   PKG_CONFIG  the pkg-config program
cmake_minimum_required(VERSION 3.25)

foreach(v BUILD_DIR WORK_DIR SOURCE_DIR C_COMPILER VERSION PKG_CONFIG)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "run.cmake: -D${v}= is required")
  endif()
endforeach()

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "FAIL ${what} (exit ${rc}):\n  ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "ok   ${what}")
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

# The version is bnorm.h's BNORM_VERSION_MAJOR.MINOR.PATCH: the package
# (project() in CMakeLists.txt, passed here as VERSION), the installed header,
# find_package's answer, pkg-config's and the README's find_package example
# must all say it, so they cannot drift apart.
function(header_version file out)
  file(STRINGS ${file} defs REGEX "^#define BNORM_VERSION_(MAJOR|MINOR|PATCH) +[0-9]+")
  foreach(part MAJOR MINOR PATCH)
    set(v_${part} "")
    foreach(d ${defs})
      if(d MATCHES "^#define BNORM_VERSION_${part} +([0-9]+)")
        set(v_${part} ${CMAKE_MATCH_1})
      endif()
    endforeach()
    if(v_${part} STREQUAL "")
      message(FATAL_ERROR "FAIL ${file} does not define BNORM_VERSION_${part}")
    endif()
  endforeach()
  set(${out} "${v_MAJOR}.${v_MINOR}.${v_PATCH}" PARENT_SCOPE)
  set(${out}_MM "${v_MAJOR}.${v_MINOR}" PARENT_SCOPE)
endfunction()
header_version(${SOURCE_DIR}/include/bnorm.h HEADER_VERSION)
if(NOT VERSION STREQUAL HEADER_VERSION)
  message(FATAL_ERROR "FAIL the package version (project() in CMakeLists.txt) is ${VERSION}, "
                      "include/bnorm.h says ${HEADER_VERSION}")
endif()
file(READ ${SOURCE_DIR}/README.md readme)
string(REGEX MATCHALL "find_package\\(bnorm [0-9.]+" readme_finds "${readme}")
if(NOT readme_finds)
  message(FATAL_ERROR "FAIL README.md has no find_package(bnorm <version> ...) example")
endif()
foreach(f ${readme_finds})
  if(NOT f STREQUAL "find_package(bnorm ${HEADER_VERSION_MM}")
    message(FATAL_ERROR "FAIL README.md's example says ${f}, bnorm.h is ${HEADER_VERSION}")
  endif()
endforeach()
message(STATUS "ok   version ${VERSION}: project(), include/bnorm.h and README.md agree")

set(prefix ${WORK_DIR}/prefix)
set(usage ${SOURCE_DIR}/examples/usage.c)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# ---- 1. install ----------------------------------------------------------------------
run("cmake --install into ${prefix}" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
file(GLOB_RECURSE installed RELATIVE ${prefix} ${prefix}/*)
list(SORT installed)
string(REPLACE ";" "\n  " listing "${installed}")
message(STATUS "installed:\n  ${listing}")
file(GLOB_RECURSE config ${prefix}/*/bnormConfig.cmake)
file(GLOB_RECURSE pc_emu ${prefix}/*/pkgconfig/bnorm_emu.pc)
file(GLOB_RECURSE pc_gpu ${prefix}/*/pkgconfig/bnorm.pc)
file(GLOB_RECURSE lib_emu ${prefix}/*/libbnorm_emu.so)
file(GLOB_RECURSE lib_gpu ${prefix}/*/libbnorm.so)
foreach(f include/bnorm.h include/bnorm_emu.h)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "FAIL the install lacks ${f}")
  endif()
endforeach()
header_version(${prefix}/include/bnorm.h INSTALLED_VERSION)
if(NOT INSTALLED_VERSION STREQUAL VERSION)
  message(FATAL_ERROR "FAIL the installed bnorm.h is version ${INSTALLED_VERSION}, the package ${VERSION}")
endif()
if(NOT config OR NOT pc_emu OR NOT lib_emu)
  message(FATAL_ERROR "FAIL the install lacks bnormConfig.cmake, bnorm_emu.pc or libbnorm_emu.so")
endif()
if(lib_gpu AND NOT pc_gpu)
  message(FATAL_ERROR "FAIL libbnorm.so is installed without bnorm.pc")
endif()
if(lib_gpu)
  message(STATUS "ok   installed: header, libbnorm_emu.so, libbnorm.so, CMake package, "
                 "bnorm_emu.pc, bnorm.pc")
else()
  message(STATUS "ok   installed: header, libbnorm_emu.so, CMake package, bnorm_emu.pc "
                 "(no GPU library in this build)")
endif()

# ---- 2. find_package ---------------------------------------------------------------------
set(cm ${WORK_DIR}/consumer-cmake)
run("configure the consumer with find_package(bnorm CONFIG)"
    ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/packaging/consumer -B ${cm}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${C_COMPILER} -DUSAGE_SOURCE=${usage}
    -DBNORM_REQUIRED_VERSION=${HEADER_VERSION_MM}
    -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
if(NOT last_output MATCHES "bnorm ${VERSION} from ${prefix}/")
  message(FATAL_ERROR "FAIL find_package found another bnorm, or version != ${VERSION}:\n"
                      "${last_output}")
endif()
run("build the consumer" ${CMAKE_COMMAND} --build ${cm})
run("run the consumer (find_package, bnorm::bnorm_emu)" ${cm}/consumer_emu)
if(NOT last_output MATCHES "\nok\n")
  message(FATAL_ERROR "FAIL the consumer did not report ok:\n${last_output}")
endif()
# It must have loaded the installed library, not the build tree's.
execute_process(COMMAND ldd ${cm}/consumer_emu OUTPUT_VARIABLE ldd_out)
if(NOT ldd_out MATCHES "libbnorm_emu.so => ${prefix}/")
  message(FATAL_ERROR "FAIL consumer_emu does not load the installed libbnorm_emu.so:\n${ldd_out}")
endif()
message(STATUS "ok   consumer_emu loads ${prefix}/.../libbnorm_emu.so")

# ---- 3. pkg-config -------------------------------------------------------------------------
get_filename_component(pcdir ${pc_emu} DIRECTORY)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
set(ENV{PKG_CONFIG_LIBDIR} ${pcdir})  # nothing but the installed tree
run("pkg-config --modversion bnorm_emu" ${PKG_CONFIG} --modversion bnorm_emu)
string(STRIP "${last_output}" pc_version)
if(NOT pc_version STREQUAL VERSION)
  message(FATAL_ERROR "FAIL bnorm_emu.pc says version ${pc_version}, expected ${VERSION}")
endif()
run("pkg-config --cflags bnorm_emu" ${PKG_CONFIG} --cflags bnorm_emu)
separate_arguments(cflags UNIX_COMMAND "${last_output}")
run("pkg-config --libs bnorm_emu" ${PKG_CONFIG} --libs bnorm_emu)
separate_arguments(libs UNIX_COMMAND "${last_output}")
run("pkg-config --variable=libdir bnorm_emu" ${PKG_CONFIG} --variable=libdir bnorm_emu)
string(STRIP "${last_output}" libdir)
run("compile and link the consumer with pkg-config's flags"
    ${C_COMPILER} -std=c99 -Wall -Wextra ${usage} ${cflags} ${libs} -lm -Wl,-rpath,${libdir}
    -o ${WORK_DIR}/consumer_pc)
run("run the consumer (pkg-config, bnorm_emu)" ${WORK_DIR}/consumer_pc)
if(NOT last_output MATCHES "\nok\n")
  message(FATAL_ERROR "FAIL the pkg-config consumer did not report ok:\n${last_output}")
endif()

if(pc_gpu)
  run("pkg-config --cflags --libs bnorm" ${PKG_CONFIG} --cflags --libs bnorm)
  separate_arguments(gpu_flags UNIX_COMMAND "${last_output}")
  run("compile and link a consumer of the GPU library with pkg-config's flags (not run)"
      ${C_COMPILER} -std=c99 ${usage} ${gpu_flags} -lm -o ${WORK_DIR}/consumer_pc_gpu)
endif()
message(STATUS "packaging test passed")
