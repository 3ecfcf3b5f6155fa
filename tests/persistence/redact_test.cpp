// Journal addresses shown in errors, /health and tool output lose their secrets.

#include <catch2/catch.hpp>

#include "annals/persistence/redact.hpp"

using annals::persistence::redact_secrets;

TEST_CASE("redact_secrets drops a URI's password and masks password parameters",
          "[persistence][redact]") {
  CHECK(redact_secrets("postgresql://bank:s3cret@db:5432/bank")
        == "postgresql://bank@db:5432/bank");
  CHECK(redact_secrets("postgres://bank:p@ss:word@db/bank") == "postgres://bank@db/bank");
  CHECK(redact_secrets("postgresql://bank@db:5432/bank") == "postgresql://bank@db:5432/bank");
  CHECK(redact_secrets("postgresql://db/bank?user=a&password=s3cret&sslmode=require")
        == "postgresql://db/bank?user=a&password=***&sslmode=require");
  CHECK(redact_secrets("nats://u:tok@10.0.0.1:4222,10.0.0.2:4222?stream=BANK")
        == "nats://u@10.0.0.1:4222,10.0.0.2:4222?stream=BANK");
  CHECK(redact_secrets("nats://127.0.0.1:4222?stream=BANK&replicas=3")
        == "nats://127.0.0.1:4222?stream=BANK&replicas=3");
  CHECK(redact_secrets("host=db password=s3cret dbname=bank")
        == "host=db password=*** dbname=bank");
  CHECK(redact_secrets("password='a b\\' c' host=db") == "password=*** host=db");
  CHECK(redact_secrets("host=db sslpassword=keep dbname=x") == "host=db sslpassword=keep dbname=x");
  CHECK(redact_secrets("sqlite:/var/lib/bank.db") == "sqlite:/var/lib/bank.db");
  CHECK(redact_secrets("") == "");
}

TEST_CASE("one_line puts a multi-line server message on one line", "[persistence][redact]") {
  using annals::persistence::one_line;
  CHECK(one_line("FATAL:  database \"x\" does not exist\n")
        == "FATAL: database \"x\" does not exist");
  CHECK(one_line("server closed the connection unexpectedly\n\tThis probably means\r\n")
        == "server closed the connection unexpectedly This probably means");
  CHECK(one_line("  \n") == "");
  CHECK(one_line("") == "");
}
