/* libpq (Debian's libpq-dev), the PostgreSQL client library behind `--store postgres://`. */
#include <libpq-fe.h>
