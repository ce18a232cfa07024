/*-------------------------------------------------------------------------
 *
 * patient_fields.h
 *	  The checks and normal forms of a patient's fields (patient_fields.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef SCHEDPHI_PATIENT_FIELDS_H
#define SCHEDPHI_PATIENT_FIELDS_H

#include "utils/date.h"

extern char *schedphi_check_name(const char *what, const char *value);
extern DateADT schedphi_check_birth_date(DateADT d);
extern DateADT schedphi_parse_birth_date(const char *value);
extern char *schedphi_norm_phone(const char *value);
extern char *schedphi_norm_email(const char *value);
extern char *schedphi_norm_mrn(const char *value);
extern char *schedphi_norm_zip(const char *value);
extern char *schedphi_family_dob(const char *family, DateADT birth);
extern char *schedphi_date_iso(DateADT d);

#endif							/* SCHEDPHI_PATIENT_FIELDS_H */
