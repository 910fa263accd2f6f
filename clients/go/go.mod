module seqd

go 1.19
