// Temporary umbrella: the calibration units have headers of their own
// (calibration_stats.h, range_estimators.h, output_error.h); include the one
// you use. Goes once no file includes this one.
#ifndef QUANTD_KERNELS_CALIBRATION_H_
#define QUANTD_KERNELS_CALIBRATION_H_

#include "kernels/calibration_stats.h"
#include "kernels/output_error.h"
#include "kernels/range_estimators.h"

#endif  // QUANTD_KERNELS_CALIBRATION_H_
