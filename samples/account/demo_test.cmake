# Runs the account demo on a fresh journal file and checks that it succeeds: exit code 0
# and its closing line. Usage: cmake -DDEMO=<annals_demo> -DDB=<file> -P demo_test.cmake
execute_process(COMMAND ${DEMO} ${DB} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
message("${out}${err}")
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "annals_demo exited with ${rc}")
endif()
if(NOT out MATCHES "\ndone: [^\n]* holds the journal, the snapshots and the balances table")
  message(FATAL_ERROR "annals_demo did not print its closing line")
endif()
if(NOT out MATCHES "== session 2: only the file survived")
  message(FATAL_ERROR "annals_demo did not reach its second session")
endif()
