# FindNATS: the NATS C client (Debian's libnats-dev). Debian's cnats CMake config names a
# static library the package does not ship, so annals looks for the header and the shared
# library itself.
#
# Defines NATS_FOUND, NATS_VERSION and the imported target NATS::nats.
find_path(NATS_INCLUDE_DIR nats/nats.h)
find_library(NATS_LIBRARY nats)
if(NATS_INCLUDE_DIR AND EXISTS "${NATS_INCLUDE_DIR}/nats/version.h")
  file(STRINGS "${NATS_INCLUDE_DIR}/nats/version.h" _nats_version_line
       REGEX "#define NATS_VERSION_STRING")
  string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" NATS_VERSION "${_nats_version_line}")
endif()
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(NATS REQUIRED_VARS NATS_LIBRARY NATS_INCLUDE_DIR
                                  VERSION_VAR NATS_VERSION)
if(NATS_FOUND AND NOT TARGET NATS::nats)
  add_library(NATS::nats UNKNOWN IMPORTED)
  set_target_properties(NATS::nats PROPERTIES IMPORTED_LOCATION "${NATS_LIBRARY}"
                        INTERFACE_INCLUDE_DIRECTORIES "${NATS_INCLUDE_DIR}")
endif()
mark_as_advanced(NATS_INCLUDE_DIR NATS_LIBRARY)
