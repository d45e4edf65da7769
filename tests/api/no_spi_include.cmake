# Fails when a public header outside include/weft/spi/ includes the provider
# interface (directly or through another header): applications never see it.
# cmake -DCXX=<compiler> -DINCLUDE=<include dir> -P no_spi_include.cmake
file(GLOB headers RELATIVE ${INCLUDE} ${INCLUDE}/weft/*.hpp ${INCLUDE}/weft/detail/*.hpp)
list(LENGTH headers n)
if(n LESS 2)
  message(FATAL_ERROR "no public headers found under ${INCLUDE}/weft")
endif()
foreach(h ${headers})
  execute_process(COMMAND ${CXX} -std=c++23 -MM -I${INCLUDE} -x c++ ${INCLUDE}/${h}
                  OUTPUT_VARIABLE deps ERROR_VARIABLE err RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${h} does not preprocess: ${err}")
  endif()
  if(NOT deps MATCHES "weft/(weft|error|types)\\.hpp" AND h STREQUAL "weft/weft.hpp")
    message(FATAL_ERROR "the dependency list of weft.hpp looks wrong: ${deps}")
  endif()
  string(REGEX MATCH "[^ \n\\\\]*weft/spi/[^ \n\\\\]*" spi "${deps}")
  if(spi)
    message(FATAL_ERROR "${h} includes the provider interface (${spi}): a type an application uses belongs in "
                        "a public header, and weft/spi/ headers include the public ones, not the other way round")
  endif()
endforeach()
message(STATUS "no public header includes weft/spi/ (${n} checked)")
