#include "annals/persistence/journal.hpp"

namespace annals::persistence {

journal::~journal() = default;

snapshot_store::~snapshot_store() = default;

} // namespace annals::persistence
