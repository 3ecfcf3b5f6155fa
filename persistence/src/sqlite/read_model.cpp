#include "annals/persistence/sqlite_read_model.hpp"

namespace annals::persistence {

sqlite_read_model::~sqlite_read_model() = default;

void sqlite_read_model::create_schema(sqlite3*) {}

} // namespace annals::persistence
