# annals_unity_build(<target>...): with ANNALS_UNITY_BUILD, the targets compile their sources
# in unity batches of up to ANNALS_UNITY_BATCH_SIZE files (docs/ci.md). Only for targets
# whose sources have been built that way with g++ and clang: in a batch, file-local helpers
# of the same name clash, and a using-directive of one file reaches the files after it.
# Targets that do not exist in this configuration are skipped.
function(annals_unity_build)
  if(NOT ANNALS_UNITY_BUILD)
    return()
  endif()
  foreach(_target IN LISTS ARGN)
    if(TARGET ${_target})
      set_target_properties(${_target} PROPERTIES UNITY_BUILD ON
                            UNITY_BUILD_BATCH_SIZE ${ANNALS_UNITY_BATCH_SIZE})
    endif()
  endforeach()
endfunction()

# annals_configure_target(<target>): warnings and sanitizers for annals' own targets.
# Nothing here leaks into the usage requirements that consumers inherit.
function(annals_configure_target target)
  # Option structs are filled with designated initializers that name only what differs
  # from the defaults; GCC's -Wextra would flag every omitted member.
  target_compile_options(${target} PRIVATE -Wall -Wextra -pedantic -Wshadow
                                           -Wno-missing-field-initializers)
  if(ANNALS_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  # g++ 12 at -O3 (Release) reports -Wrestrict inside libstdc++'s std::string concatenation
  # (GCC bug 105329), a false positive that -Werror would turn into a failed build.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
  if(ANNALS_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${ANNALS_SANITIZE} -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${ANNALS_SANITIZE})
  endif()
endfunction()
