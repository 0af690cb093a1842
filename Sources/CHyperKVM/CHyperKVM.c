// CHyperKVM has only header-inline code; this file gives the target a translation unit.
#include "CHyperKVM.h"
