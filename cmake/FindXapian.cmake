# FindXapian: the Xapian search engine library (Debian's libxapian-dev). Xapian's own CMake
# config sets cache variables only, no imported target, so annals looks for the header and
# the shared library itself.
#
# Defines Xapian_FOUND, Xapian_VERSION and the imported target Xapian::xapian.
find_path(Xapian_INCLUDE_DIR xapian.h)
find_library(Xapian_LIBRARY xapian)
if(Xapian_INCLUDE_DIR AND EXISTS "${Xapian_INCLUDE_DIR}/xapian/version.h")
  file(STRINGS "${Xapian_INCLUDE_DIR}/xapian/version.h" _xapian_version_line
       REGEX "#define XAPIAN_VERSION \"")
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" Xapian_VERSION "${_xapian_version_line}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(Xapian REQUIRED_VARS Xapian_LIBRARY Xapian_INCLUDE_DIR
                                  VERSION_VAR Xapian_VERSION)
if(Xapian_FOUND AND NOT TARGET Xapian::xapian)
  add_library(Xapian::xapian UNKNOWN IMPORTED)
  set_target_properties(Xapian::xapian PROPERTIES IMPORTED_LOCATION "${Xapian_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${Xapian_INCLUDE_DIR}")
endif()
mark_as_advanced(Xapian_INCLUDE_DIR Xapian_LIBRARY)
