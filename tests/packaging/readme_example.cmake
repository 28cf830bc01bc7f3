# The README's usage example is examples/usage.c, verbatim: the code block
# that follows the line "<!-- examples/usage.c -->" in README.md must equal
# the file (which the tests build and run). Run with cmake -P and
# -DSOURCE_DIR=<bnorm's source folder>.
cmake_minimum_required(VERSION 3.25)
file(READ ${SOURCE_DIR}/README.md readme)
file(READ ${SOURCE_DIR}/examples/usage.c source)
string(FIND "${readme}" "<!-- examples/usage.c -->" at)
if(at EQUAL -1)
  message(FATAL_ERROR "FAIL README.md has no \"<!-- examples/usage.c -->\" marker")
endif()
string(SUBSTRING "${readme}" ${at} -1 rest)
string(FIND "${rest}" "```c\n" open)
if(open EQUAL -1)
  message(FATAL_ERROR "FAIL no ```c block after the marker")
endif()
math(EXPR start "${open} + 5")
string(SUBSTRING "${rest}" ${start} -1 rest)
string(FIND "${rest}" "```" close)
string(SUBSTRING "${rest}" 0 ${close} block)
if(NOT block STREQUAL source)
  file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/readme_block.c "${block}")
  message(FATAL_ERROR "FAIL README.md's usage example differs from examples/usage.c "
                      "(the README's copy is in ${CMAKE_CURRENT_BINARY_DIR}/readme_block.c)")
endif()
string(LENGTH "${source}" n)
message(STATUS "ok   README.md shows examples/usage.c verbatim (${n} characters)")
