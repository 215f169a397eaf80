-- evproc 0.2.0 -> 0.3.0 (ALTER EXTENSION evproc UPDATE). Released: never edited once
-- 0.3.0 is released (extension/versions/SHA256SUMS).
-- What a fresh 0.3.0 install makes, t/015_upgrade.pl checks that this script makes too.
\echo Use "ALTER EXTENSION evproc UPDATE TO '0.3.0'" to load this file. \quit
