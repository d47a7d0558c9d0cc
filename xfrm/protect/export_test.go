package protect

// LinkIndex is linkIndex for the external tests (charon_test.go).
var LinkIndex = linkIndex
