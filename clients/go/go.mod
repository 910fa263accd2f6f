module github.com/seqd/seqd/clients/go

go 1.19
