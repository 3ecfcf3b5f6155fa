// The journal contract suite on NATS JetStream: one server (R1) and a three-server cluster
// (R3), started by the test process.

#include "jetstream/nats_fixture.hpp"

#define ANNALS_CONTRACT_BACKENDS jetstream_r1_backend, jetstream_r3_backend
#define ANNALS_CONTRACT_READ_BACKENDS jetstream_r1_backend, jetstream_r3_backend
#include "persistence/journal_contract_test.cpp"
