// The journal contract suite on PostgreSQL: one server per test process, a database per
// test case.

#include "postgres/pg_fixture.hpp"

#define ANNALS_CONTRACT_BACKENDS postgres_backend
#define ANNALS_CONTRACT_READ_BACKENDS postgres_backend, postgres_second_journal_backend
#include "persistence/journal_contract_test.cpp"
