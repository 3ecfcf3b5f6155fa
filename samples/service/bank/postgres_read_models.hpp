#pragma once

// The bank's balances and statement read models in PostgreSQL, for annals-bank with its
// journal on PostgreSQL: the same tables and replies as in SQLite, kept by exactly-once
// projections in the journal's own database (rows and offset in one transaction), and read
// by the query workers through one connection.

#include <memory>
#include <string>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "annals/actors/projection.hpp"
#include "annals/persistence/journal.hpp"
#include "service/bank/read_models.hpp"

namespace service {

/// Creates the tables (and `projection_offsets`) in the database `conninfo` if missing and
/// opens the queries' connection. Fails with `annals.unavailable` naming the server.
caf::expected<std::unique_ptr<read_models>> open_postgres_read_models(const std::string& conninfo);

/// Starts the `balances` and `statement` projections of `journal` into `conninfo`.
std::vector<annals::actors::projection>
spawn_postgres_projections(caf::actor_system& sys, annals::persistence::journal_ptr journal,
                           const std::string& conninfo);

} // namespace service
