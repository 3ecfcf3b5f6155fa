#include "annals/actors/projection_sink.hpp"

#include <exception>

#include "annals/actors/projection.hpp"

namespace annals::actors {

projection_sink::~projection_sink() = default;

std::string to_string(delivery d) {
  return d == delivery::exactly_once ? "exactly_once" : "at_least_once";
}

std::string current_exception_text() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

caf::error handler_error(const std::string& name, const persistence::event_record& rec,
                         const std::string& what) {
  return make_error(projection_errc::handler_failed,
                    "projection '" + name + "' stopped at offset " + std::to_string(rec.offset)
                      + " (" + rec.persistence_id + " seq " + std::to_string(rec.seq) + ", "
                      + rec.name + "): " + what);
}

} // namespace annals::actors
