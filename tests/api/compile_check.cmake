# Compiles SOURCE with the public headers; EXPECT=pass: it must compile;
# EXPECT=fail: it must not, with the error in SOURCE itself.
# cmake -DCXX=... -DINCLUDE=... -DSOURCE=... -DEXPECT=pass|fail [-DDEFINE=NAME] -P compile_check.cmake
# Warnings are errors only where the file must compile: a refusal must be a
# real error, not a warning.
set(args -std=c++23 -fsyntax-only -Wall -Wextra -I${INCLUDE})
if(EXPECT STREQUAL "pass")
  list(APPEND args -Werror)
endif()
if(DEFINE)
  list(APPEND args -D${DEFINE})
endif()
execute_process(COMMAND ${CXX} ${args} ${SOURCE} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
get_filename_component(name ${SOURCE} NAME)
if(EXPECT STREQUAL "pass")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name} should compile but does not:\n${err}")
  endif()
  message(STATUS "compiles, as it should")
else()
  if(rc EQUAL 0)
    message(FATAL_ERROR "${name} with ${DEFINE} compiles, but that misuse must be a compile error")
  endif()
  # The right reason: the first error is on the misuse's own line (the one
  # after `defined(DEFINE)`), and it is a type mismatch, not a typo or a
  # missing name elsewhere in the file.
  file(READ ${SOURCE} content)
  string(FIND "${content}" "defined(${DEFINE})" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "${name} has no `#elif defined(${DEFINE})`")
  endif()
  string(SUBSTRING "${content}" 0 ${pos} before)
  string(REGEX MATCHALL "\n" newlines "${before}")
  list(LENGTH newlines k)
  math(EXPR misuse_line "${k} + 2")
  string(REGEX MATCH "${name}:[0-9]+:[0-9]+: error: [^\n]*" first "${err}")
  if(NOT first MATCHES "^${name}:${misuse_line}:")
    message(FATAL_ERROR "${name} with ${DEFINE} fails, but not at its line ${misuse_line}:\n${err}")
  endif()
  if(NOT first MATCHES "no matching function|cannot convert|could not convert|use of deleted function|no match for")
    message(FATAL_ERROR "${name} with ${DEFINE} fails at its line, but not for a type mismatch: ${first}")
  endif()
  message(STATUS "refused, as it should be")
endif()
