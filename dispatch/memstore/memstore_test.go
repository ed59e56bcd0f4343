package memstore_test

import (
	"testing"

	"github.com/understudy/understudy/dispatch"
	"github.com/understudy/understudy/dispatch/memstore"
	"github.com/understudy/understudy/dispatch/storetest"
)

func TestContract(t *testing.T) {
	storetest.Run(t, func(testing.TB) dispatch.Store { return memstore.New() })
}
