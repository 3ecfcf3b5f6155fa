# FindCAF
# -------
# Finds the C++ Actor Framework 0.17 as packaged by Debian (libcaf-dev), which ships
# headers and shared libraries but no CMake package configuration.
#
# Imported targets (one per found component; `core` is always searched):
#   CAF::core   libcaf_core, with Threads::Threads in its interface
#   CAF::io     libcaf_io (the middleman), depends on CAF::core
#
# Result variables: CAF_FOUND, CAF_INCLUDE_DIR, CAF_VERSION, CAF_<COMP>_LIBRARY.
# Hints: CAF_ROOT_DIR (prefix to search before the system paths).

include(FindPackageHandleStandardArgs)
include(CMakeFindDependencyMacro)
find_dependency(Threads)

find_path(CAF_INCLUDE_DIR NAMES caf/config.hpp HINTS ${CAF_ROOT_DIR}/include)

if(CAF_INCLUDE_DIR AND EXISTS "${CAF_INCLUDE_DIR}/caf/config.hpp")
  file(STRINGS "${CAF_INCLUDE_DIR}/caf/config.hpp" _caf_version_line
       REGEX "^#define CAF_VERSION [0-9]+")
  if(_caf_version_line MATCHES "CAF_VERSION ([0-9]+)")
    math(EXPR _caf_major "${CMAKE_MATCH_1} / 10000")
    math(EXPR _caf_minor "(${CMAKE_MATCH_1} / 100) % 100")
    math(EXPR _caf_patch "${CMAKE_MATCH_1} % 100")
    set(CAF_VERSION "${_caf_major}.${_caf_minor}.${_caf_patch}")
  endif()
endif()

set(_caf_components core ${CAF_FIND_COMPONENTS})
list(REMOVE_DUPLICATES _caf_components)
set(_caf_required_vars CAF_INCLUDE_DIR)
foreach(_comp IN LISTS _caf_components)
  string(TOUPPER "${_comp}" _COMP)
  find_library(CAF_${_COMP}_LIBRARY NAMES caf_${_comp} HINTS ${CAF_ROOT_DIR}/lib)
  if(CAF_${_COMP}_LIBRARY)
    set(CAF_${_comp}_FOUND TRUE)
  endif()
  if(CAF_FIND_REQUIRED_${_comp} OR _comp STREQUAL "core")
    list(APPEND _caf_required_vars CAF_${_COMP}_LIBRARY)
  endif()
endforeach()

find_package_handle_standard_args(CAF
  REQUIRED_VARS ${_caf_required_vars}
  VERSION_VAR CAF_VERSION
  HANDLE_COMPONENTS)

if(CAF_FOUND)
  foreach(_comp IN LISTS _caf_components)
    string(TOUPPER "${_comp}" _COMP)
    if(CAF_${_COMP}_LIBRARY AND NOT TARGET CAF::${_comp})
      add_library(CAF::${_comp} SHARED IMPORTED)
      set_target_properties(CAF::${_comp} PROPERTIES
        IMPORTED_LOCATION "${CAF_${_COMP}_LIBRARY}"
        INTERFACE_INCLUDE_DIRECTORIES "${CAF_INCLUDE_DIR}")
      if(_comp STREQUAL "core")
        set_property(TARGET CAF::core PROPERTY INTERFACE_LINK_LIBRARIES Threads::Threads)
      else()
        set_property(TARGET CAF::${_comp} PROPERTY INTERFACE_LINK_LIBRARIES CAF::core)
      endif()
    endif()
  endforeach()
endif()

mark_as_advanced(CAF_INCLUDE_DIR CAF_CORE_LIBRARY CAF_IO_LIBRARY CAF_OPENSSL_LIBRARY)
