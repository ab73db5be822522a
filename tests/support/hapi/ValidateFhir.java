import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.DefaultProfileValidationSupport;
import ca.uhn.fhir.validation.FhirValidator;
import ca.uhn.fhir.validation.ValidationResult;
import org.hl7.fhir.common.hapi.validation.support.CommonCodeSystemsTerminologyService;
import org.hl7.fhir.common.hapi.validation.support.InMemoryTerminologyServerValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.SnapshotGeneratingValidationSupport;
import org.hl7.fhir.common.hapi.validation.support.ValidationSupportChain;
import org.hl7.fhir.common.hapi.validation.validator.FhirInstanceValidator;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Validates FHIR R4 JSON files with HAPI FHIR's instance validator: the R4 base profiles, the FHIR code
 * systems it carries (UCUM among them) and no terminology server (so LOINC and SNOMED CT codes are reported
 * as unknown, not checked). Prints one OperationOutcome per file, one JSON line each, in the order given.
 */
public class ValidateFhir {
    public static void main(String[] args) throws Exception {
        FhirContext context = FhirContext.forR4();
        ValidationSupportChain support = new ValidationSupportChain(
                new DefaultProfileValidationSupport(context),
                new CommonCodeSystemsTerminologyService(context),
                new InMemoryTerminologyServerValidationSupport(context),
                new SnapshotGeneratingValidationSupport(context));
        FhirValidator validator = context.newValidator().registerValidatorModule(new FhirInstanceValidator(support));
        for (String file : args) {
            String body = Files.readString(Path.of(file), StandardCharsets.UTF_8);
            ValidationResult result = validator.validateWithResult(body);
            System.out.println(context.newJsonParser().encodeResourceToString(result.toOperationOutcome()));
        }
    }
}
