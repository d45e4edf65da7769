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
  if(NOT err MATCHES "${name}:[0-9]+:[0-9]+: error")
    message(FATAL_ERROR "${name} with ${DEFINE} fails, but not in ${name}:\n${err}")
  endif()
  message(STATUS "refused, as it should be")
endif()
