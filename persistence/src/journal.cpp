#include "annals/persistence/journal.hpp"

namespace annals::persistence {

std::size_t encoded_size(const append_request& req) noexcept {
  auto size =
    req.persistence_id.size() + req.metadata.command_id.size() + req.metadata.correlation_id.size();
  for (const auto& ev : req.events) {
    size += ev.name.size() + ev.payload.size();
    for (const auto& tag : ev.tags)
      size += tag.size();
  }
  return size;
}

journal::~journal() = default;

snapshot_store::~snapshot_store() = default;

} // namespace annals::persistence
